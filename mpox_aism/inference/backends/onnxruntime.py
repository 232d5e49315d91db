"""ONNX Runtime backend: the CPU default (CUDA provider when the wheel has it), fp32 or int8.

The int8 file (``model.int8.onnx``, ``mpox-aism export int8``) has the same inputs, outputs and
metadata as ``model.onnx`` — only its weights and activations are quantized — so the same class
runs it; the subclass exists so the backend name and ``describe()`` say which file is served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpox_aism.contracts.model import FEATURES_NAME, INPUT_NAME, MAPS_NAME, OUTPUT_NAME
from mpox_aism.inference.classifier import Classifier
from mpox_aism.inference.metadata import read_onnx_meta


class OnnxRuntimeClassifier(Classifier):
    backend = "onnxruntime"
    precision = "fp32"
    thread_safe = True  # InferenceSession.run may be called from several threads

    def __init__(self, onnx_path: str | Path, *, max_batch: int = 32, providers: list[str] | None = None,
                 threads: int | None = None):
        import onnxruntime as ort

        super().__init__(read_onnx_meta(onnx_path), max_batch=max_batch)
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # the pool's threads sleep between runs instead of spinning: the kiosk's inference worker calls it
        # a few times per frame, and spinning threads took the CPU the cameras' detection needed (process CPU
        # per frame on one camera 64-81 ms spinning, 55-60 ms not: docs/RESULTS.md, session 12)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        self._ort_version = ort.__version__
        outputs = {o.name for o in self.session.get_outputs()}
        self.can_explain = MAPS_NAME in outputs
        self.has_features = FEATURES_NAME in outputs

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]  # the maps branch is not computed

    def logits_and_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.can_explain:
            return super().logits_and_maps(batch)
        logits, maps = self.session.run([OUTPUT_NAME, MAPS_NAME], {INPUT_NAME: batch})
        return logits, maps

    def logits_maps_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if not (self.can_explain and self.has_features):
            return super().logits_maps_features(batch)
        logits, maps, feats = self.session.run([OUTPUT_NAME, MAPS_NAME, FEATURES_NAME], {INPUT_NAME: batch})  # one pass
        return logits, maps, feats

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_features:
            return super().logits_and_features(batch)
        logits, feats = self.session.run([OUTPUT_NAME, FEATURES_NAME], {INPUT_NAME: batch})
        return logits, feats

    def describe(self) -> dict:
        return {**super().describe(), "precision": self.precision, "onnxruntime": self._ort_version,
                "providers": self.session.get_providers()}

    def close(self) -> None:
        self.session = None


class OnnxRuntimeInt8Classifier(OnnxRuntimeClassifier):
    """``model.int8.onnx``: static int8 (QDQ, per-channel) for CPU boxes; class maps and features kept."""

    backend = "onnxruntime-int8"
    precision = "int8"
