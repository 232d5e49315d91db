"""TensorRT export and backend. Everything but the engine build runs without TensorRT or a GPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from mpox_aism.contracts.labels import LABELS
from mpox_aism.contracts.preprocess import MEAN, STD, preprocess_numpy
from mpox_aism.export.tensorrt import calibration_batches, get_args_parser, list_calibration_images, main, onnx_contract
from mpox_aism.inference.sidecar import EngineMismatchError, check_sidecar

H100 = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_version": "10.3.0",
        "onnx": "models/default/model.onnx", "engine": "models/default/model.engine",
        "build_args": {"fp16": True, "int8": False, "max_batch": 32}}


def test_sidecar_same_machine_passes():
    check_sidecar(H100, trt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


def test_sidecar_other_gpu_names_both_and_how_to_rebuild():
    with pytest.raises(EngineMismatchError) as e:
        check_sidecar(H100, trt_version="10.3.0", gpu_name="NVIDIA H200", compute_capability="9.0")
    msg = str(e.value)
    assert "NVIDIA H100 80GB HBM3" in msg and "NVIDIA H200" in msg
    assert "mpox-aism export tensorrt --onnx models/default/model.onnx --out models/default/model.engine --fp16" in msg


def test_sidecar_other_compute_capability_or_tensorrt_version_fails():
    with pytest.raises(EngineMismatchError, match=r"capability 9\.0.*capability 8\.9"):
        check_sidecar(H100, trt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="8.9")
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.3\.0.*TensorRT 10\.7\.0.*rebuild"):
        check_sidecar(H100, trt_version="10.7.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    assert issubclass(EngineMismatchError, RuntimeError)


@pytest.fixture
def calib_folder(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """Three PNGs in nested class folders, plus a text file and a broken 'image' that must be skipped."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20 + 7 * i, 30, 3), dtype=np.uint8) for i in range(3)]
    for i, (sub, rgb) in enumerate(zip(("a", "a", "b/deep"), images, strict=True)):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(tmp_path / sub / f"img{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "b" / "zz_broken.jpg").write_bytes(b"not a jpeg either")
    return tmp_path, images


def test_calibration_images_are_found_recursively(calib_folder):
    root, _ = calib_folder
    found = list_calibration_images(root)
    assert [p.relative_to(root).as_posix() for p in found] == [
        "a/img0.png", "a/img1.png", "b/deep/img2.png", "b/zz_broken.jpg"]
    subset = list_calibration_images(root, limit=2)
    assert len(subset) == 2 and subset == list_calibration_images(root, limit=2)  # seeded, repeatable
    with pytest.raises(FileNotFoundError):
        list_calibration_images(root / "missing")


def test_calibration_batches_are_preprocess_numpy_of_each_rgb_image(calib_folder):
    root, images = calib_folder
    paths = list_calibration_images(root)
    batches = list(calibration_batches(paths, 16, batch_size=3))  # the broken jpg is skipped, not fatal
    assert len(batches) == 1
    b = batches[0]
    assert b.dtype == np.float32 and b.shape == (3, 3, 16, 16)
    for row, rgb in zip(b, images, strict=True):
        np.testing.assert_array_equal(row, preprocess_numpy(rgb, 16))
    # only full batches: the calibration profile fixes the batch size
    assert [x.shape[0] for x in calibration_batches(paths, 16, batch_size=2)] == [2]


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def make_onnx(path: Path, *, meta: bool = True, size: int = 32) -> nn.Module:
    import onnx

    torch.manual_seed(0)
    model = TinyNet().eval()
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if meta:
        proto = onnx.load(str(path))
        prop = proto.metadata_props.add()
        prop.key, prop.value = "mpox_aism_meta", json.dumps(
            {"image_size": size, "labels": list(LABELS), "mean": list(MEAN), "std": list(STD), "temperature": 1.0,
             "threshold": 0.6, "model_version": "test", "arch": "tiny"})
        onnx.save(proto, str(path))
    return model


def test_onnx_contract_reads_meta_and_size(tmp_path):
    make_onnx(tmp_path / "m.onnx")
    meta, size = onnx_contract(tmp_path / "m.onnx")
    assert size == 32 and meta.image_size == 32 and meta.labels == LABELS and meta.arch == "tiny"
    with pytest.raises(ValueError, match="is 64"):
        onnx_contract(tmp_path / "m.onnx", image_size=64)
    make_onnx(tmp_path / "bare.onnx", meta=False)
    with pytest.raises(ValueError, match=r"mpox_aism_meta.*mpox-aism export onnx"):
        onnx_contract(tmp_path / "bare.onnx")


def test_cli_without_tensorrt_exits_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError even where it exists
    args = get_args_parser().parse_args(["--onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "m.engine")])
    with pytest.raises(SystemExit) as e:
        main(args)
    assert isinstance(e.value.code, str)  # SystemExit(str) prints it and exits with status 1
    assert "TensorRT is not installed: pip install tensorrt on a CUDA machine" in e.value.code


def test_backend_without_tensorrt_fails_clearly(monkeypatch, tmp_path):
    from mpox_aism.inference.backends.tensorrt import TensorRTClassifier

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match="TensorRT is not installed"):
        TensorRTClassifier(tmp_path / "m.engine")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_and_run_engine(tmp_path, calib_folder, precision):
    pytest.importorskip("tensorrt",
                        reason="TensorRT is not installable on these machines (see ../shared/ENVIRONMENT.md)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from mpox_aism.export.tensorrt import build_engine, load_sidecar
    from mpox_aism.inference.backends.tensorrt import TensorRTClassifier

    model = make_onnx(tmp_path / "m.onnx")
    engine = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", fp16=precision == "fp16",
                          int8=precision == "int8", calib_dir=calib_folder[0] if precision == "int8" else None,
                          max_batch=4, opt_batch=2)
    sidecar = load_sidecar(engine)
    assert sidecar["precision"] == precision and sidecar["profile"]["max"] == [4, 3, 32, 32]
    assert sidecar["meta"]["arch"] == "tiny" and sidecar["outputs"][0]["name"] == "logits"
    assert (tmp_path / "m.engine.timing-cache").is_file()
    if precision == "int8":
        assert (tmp_path / "m.engine.calib-cache").is_file()

    rng = np.random.default_rng(1)
    batch = rng.normal(size=(7, 3, 32, 32)).astype(np.float32)  # 7 > max_batch 4: chunked by the base class
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
    with TensorRTClassifier(engine) as clf:
        assert clf.max_batch == 4 and clf.describe()["precision"] == precision
        probs = clf.predict_preprocessed(batch)
        single = clf.logits(batch[:1])
    assert probs.shape == (7, len(LABELS)) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, expected, atol={"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}[precision])
    assert single.shape == (1, len(LABELS)) and single.dtype == np.float32
