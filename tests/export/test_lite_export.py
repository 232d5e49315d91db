"""EfficientNet-Lite and MobileNetV2+Lite2 fused end to end: model dir → ONNX parity → Grad-CAM → pipeline."""

import pytest

from mpox_aism.export.onnx import check_parity, export_onnx
from mpox_aism.inference.backends import load_classifier
from mpox_aism.inference.gradcam import GradCamExplainer
from mpox_aism.model.modeldir import ModelInfo, save_model
from mpox_aism.model.zoo import build_model, load_imagenet_weights
from tests.conftest import SHARED_DATA

CLIP = SHARED_DATA / "video" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module", params=["efficientnet_lite0", "efficientnet_lite2",
                                                   "mobilenet_v2+efficientnet_lite2"])
def lite_dir(request, tmp_path_factory):
    arch = request.param
    model = build_model(arch, image_size=128)
    try:
        load_imagenet_weights(model, arch)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp(arch.replace("+", "_"))
    save_model(out, model.eval(), ModelInfo(arch=arch, image_size=128, temperature=1.3))
    export_onnx(out, out / "model.onnx")
    return out


def test_onnx_parity_on_real_photos(lite_dir, real_crops):
    report = check_parity(lite_dir, lite_dir / "model.onnx", real_crops, tolerance=1e-4)
    assert report["passed"] and report["argmax_agree"] == 1.0


def test_onnx_heat_maps_match_grad_cam(lite_dir, real_crops):
    """The exported class_maps output explains like Grad-CAM on the torch weights (fused: both branches)."""
    with load_classifier("onnxruntime", lite_dir) as clf:
        assert clf.can_explain
        ours = clf.explain(real_crops[0])
    theirs = GradCamExplainer(lite_dir).explain(real_crops[0], target=ours.target)
    assert float(abs(ours.heatmap - theirs.heatmap).max()) <= 0.02


def test_gradcam_explains_the_last_feature_map(lite_dir, real_crops):
    exp = GradCamExplainer(lite_dir).explain(real_crops[0])
    assert exp.heatmap.shape == real_crops[0].shape[:2] and 0.0 <= exp.heatmap.min() <= exp.heatmap.max() <= 1.0


def test_runs_in_the_camera_pipeline(lite_dir):
    if not CLIP.is_file():
        pytest.skip(f"real video not found at {CLIP}")
    from mpox_aism.pipeline.pipeline import Pipeline, PipelineConfig
    from mpox_aism.pipeline.regions import RegionDetector
    from mpox_aism.pipeline.sources import open_source

    try:
        det = RegionDetector()
    except Exception as e:
        pytest.skip(f"MediaPipe regions unavailable: {e}")
    with det, load_classifier("onnxruntime", lite_dir) as clf, open_source(str(CLIP)) as src:
        pipe = Pipeline(clf, det, PipelineConfig(detect_stride=2, classify_stride=3))
        decisions = list(pipe.run(src))
    assert decisions and all(set(d.probabilities) == set(clf.meta.labels) for d in decisions)
