"""TensorRT 10 backend: a serialised engine run with torch CUDA buffers and ``execute_async_v3``.

The engine's sidecar (``<engine>.json``, written by ``mpox-aism export tensorrt``) is checked
before deserialising, because an engine from another GPU model or TensorRT version fails late and
obscurely. I/O goes through torch CUDA tensors bound with ``set_tensor_address`` (the TensorRT 10
name-based API), so no pycuda is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mpox_aism.contracts.model import FEATURES_NAME, INPUT_NAME, MAPS_NAME, OUTPUT_NAME, meta_from_json
from mpox_aism.inference.classifier import Classifier
from mpox_aism.inference.sidecar import check_sidecar, gpu_identity, import_tensorrt, load_sidecar, sidecar_path


class TensorRTClassifier(Classifier):
    backend = "tensorrt"
    thread_safe = False  # one execution context and its bound buffers: one call at a time

    def __init__(self, engine_path: str | Path, *, max_batch: int | None = None, device: str = "cuda:0"):
        import torch

        trt = import_tensorrt()
        engine_path = Path(engine_path)
        sidecar = load_sidecar(engine_path)
        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT backend needs a CUDA GPU; torch.cuda.is_available() is False")
        self.device = torch.device(device)
        self._gpu_name, self._capability = gpu_identity(self.device)
        check_sidecar(sidecar, trt_version=trt.__version__, gpu_name=self._gpu_name,
                      compute_capability=self._capability)
        profile_max = int(sidecar["profile"]["max"][0])
        max_batch = max_batch or profile_max
        if not 1 <= max_batch <= profile_max:
            raise ValueError(f"max_batch {max_batch} is outside the engine's profile (1..{profile_max})")
        super().__init__(meta_from_json(json.dumps(sidecar["meta"]), str(sidecar_path(engine_path))),
                         max_batch=max_batch)
        self._trt_version, self._precision, self._path = trt.__version__, sidecar.get("precision", "?"), engine_path

        with torch.cuda.device(self.device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not deserialise {engine_path} (see the TensorRT errors above)")
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
                raise ValueError(f"{engine_path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                                 f"got inputs {inputs} and outputs {outputs}")
            # An fp16/int8 engine usually keeps float32 I/O, but read the dtypes instead of assuming it.
            dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
            full = (max_batch, 3, self.image_size, self.image_size)
            if not self.context.set_input_shape(INPUT_NAME, full):
                raise RuntimeError(f"{engine_path}: input shape {full} is outside the engine's profile")
            self._input = torch.empty(full, dtype=dtypes[INPUT_NAME], device=self.device)
            self._outputs = {n: torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=dtypes[n],
                                            device=self.device) for n in outputs}
            self.stream = torch.cuda.Stream(device=self.device)
        self.can_explain = MAPS_NAME in self._outputs  # built from an ONNX file with class maps
        self.has_features = FEATURES_NAME in self._outputs  # ... and with pooled features (session 10 on)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch, (OUTPUT_NAME,))[0]

    def logits_and_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.can_explain:
            return super().logits_and_maps(batch)
        logits, maps = self._run(batch, (OUTPUT_NAME, MAPS_NAME))
        return logits, maps

    def logits_maps_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if not (self.can_explain and self.has_features):
            return super().logits_maps_features(batch)
        logits, maps, feats = self._run(batch, (OUTPUT_NAME, MAPS_NAME, FEATURES_NAME))  # one pass
        return logits, maps, feats

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_features:
            return super().logits_and_features(batch)
        logits, feats = self._run(batch, (OUTPUT_NAME, FEATURES_NAME))
        return logits, feats

    def _run(self, batch: np.ndarray, wanted: tuple[str, ...]) -> list[np.ndarray]:
        import torch

        n = len(batch)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            x = self._input[:n]  # leading-dim slices of contiguous buffers stay contiguous
            x.copy_(torch.from_numpy(np.ascontiguousarray(batch)))  # converts to the engine's input dtype
            if not self.context.set_input_shape(INPUT_NAME, tuple(batch.shape)):
                raise ValueError(f"batch shape {batch.shape} is outside the engine's profile")
            self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
            for name, buf in self._outputs.items():  # every I/O tensor needs an address, used or not
                self.context.set_tensor_address(name, buf.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT errors above)")
            out = [self._outputs[name][:n].float().cpu() for name in wanted]
            self.stream.synchronize()
        return [o.numpy() for o in out]

    def describe(self) -> dict:
        return {**super().describe(), "precision": self._precision, "tensorrt": self._trt_version,
                "gpu": self._gpu_name, "compute_capability": self._capability, "engine": str(self._path)}

    def close(self) -> None:
        # Context, then engine, then runtime: each one depends on the next.
        self.context = None
        self.engine = None
        self._runtime = None
        self._input, self._outputs = None, {}


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"unsupported TensorRT I/O dtype {dtype} (expected float32, float16 or bfloat16)")
    return table[dtype]
