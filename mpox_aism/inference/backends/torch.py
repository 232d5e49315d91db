"""PyTorch backend: CPU or CUDA, fp32/fp16/bf16, channels_last, CUDA graphs for fixed batch sizes.

CUDA graphs remove the per-kernel launch cost that dominates small batches on a fast GPU: one
graph is captured per batch-size bucket (a batch is zero-padded up to the next bucket), then each
call is a copy into the static input, one replay, and a copy out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mpox_aism.inference.classifier import Classifier
from mpox_aism.inference.metadata import meta_from_info
from mpox_aism.model.modeldir import load_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_GRAPH_BATCHES = (1, 8, 32)


class TorchClassifier(Classifier):
    backend = "torch"

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu", precision: str = "fp32",
                 channels_last: bool = False, cuda_graphs: bool = False,
                 graph_batches: tuple[int, ...] = DEFAULT_GRAPH_BATCHES, max_batch: int = 32):
        model, info = load_model(model_path)
        super().__init__(meta_from_info(info), max_batch=max_batch)
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        if self.device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 is a GPU precision; use fp32 or bf16 on the CPU")
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.precision, self.dtype = precision, DTYPES[precision]
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, self.dtype).to(memory_format=self.memory_format).eval()
        self.cuda_graphs = cuda_graphs
        self.graph_batches = tuple(sorted({b for b in graph_batches if b < max_batch} | {max_batch}))
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pinned: dict[torch.Size, torch.Tensor] = {}
        from mpox_aism.inference.cam import supports_class_maps

        self.can_explain = supports_class_maps(info.arch)
        self.has_features = True  # the head's input, by a hook (inference.cam.WithFeatures)
        self._with_maps: torch.nn.Module | None = None
        self._with_features: torch.nn.Module | None = None

    def to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            # reuse one pinned staging buffer per shape: allocating pinned memory per call costs more
            # than the copy itself
            staging = self._pinned.get(x.shape)
            if staging is None:
                staging = self._pinned.setdefault(x.shape, torch.empty(x.shape, dtype=x.dtype).pin_memory())
            staging.copy_(x)
            x = staging.to(self.device, non_blocking=True)
        return x.to(self.dtype).contiguous(memory_format=self.memory_format)

    @torch.no_grad()
    def forward_device(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch already on the device in the right dtype/layout (benchmarks use this)."""
        if not self.cuda_graphs:
            return self.model(x)
        n = x.shape[0]
        bucket = next(b for b in self.graph_batches if b >= n)
        graph, static_in, static_out = self._graphs.get(bucket) or self._capture(bucket)
        if n < bucket:
            static_in.zero_()
        static_in[:n].copy_(x)
        graph.replay()
        return static_out[:n]

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.forward_device(self.to_device(batch)).float().cpu().numpy()

    @torch.no_grad()
    def logits_and_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.can_explain:
            return super().logits_and_maps(batch)
        if self._with_maps is None:
            from mpox_aism.inference.cam import WithClassMaps

            self._with_maps = WithClassMaps(self.model, self.meta.arch)
        logits, maps = self._with_maps(self.to_device(batch))
        return logits.float().cpu().numpy(), maps.float().cpu().numpy()

    def _features_pass(self, batch: np.ndarray) -> list[np.ndarray]:
        """Logits, features and (GAP → linear heads) class maps: ``inference.cam.WithFeatures``, one pass."""
        if self._with_features is None:
            from mpox_aism.inference.cam import WithFeatures

            self._with_features = WithFeatures(self.model, self.meta.arch)
        with torch.no_grad():
            return [t.float().cpu().numpy() for t in self._with_features(self.to_device(batch))]

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._features_pass(batch)
        return out[0], out[1]

    def logits_maps_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if not self.can_explain:
            return super().logits_maps_features(batch)
        logits, feats, maps = self._features_pass(batch)
        return logits, maps, feats

    def _capture(self, batch_size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        s = self.image_size
        static_in = torch.zeros(batch_size, 3, s, s, device=self.device, dtype=self.dtype)
        static_in = static_in.contiguous(memory_format=self.memory_format)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up on a side stream, as the CUDA graphs docs require
            for _ in range(3):
                self.model(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in)
        self._graphs[batch_size] = (graph, static_in, static_out)
        return self._graphs[batch_size]

    def describe(self) -> dict:
        return {**super().describe(), "precision": self.precision, "device": str(self.device),
                "channels_last": self.channels_last, "cuda_graphs": self.cuda_graphs, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None}

    def close(self) -> None:
        self._graphs.clear()
        self._pinned.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
