import cv2
import numpy as np

from mpox_aism.inference.gradcam import GradCamExplainer, target_layer
from mpox_aism.model.zoo import ARCHS, build_model


def test_explains_a_real_photo(default_model, real_crops):
    explainer = GradCamExplainer(default_model)
    crop = real_crops[0]
    e = explainer.explain(crop)
    assert e.heatmap.shape == crop.shape[:2] and e.heatmap.dtype == np.float32
    assert e.heatmap.min() >= 0.0 and e.heatmap.max() <= 1.0 and e.heatmap.max() > 0
    assert e.overlay.shape == crop.shape and e.overlay.dtype == np.uint8
    png = cv2.imdecode(np.frombuffer(e.overlay_png(), np.uint8), cv2.IMREAD_COLOR)
    assert png.shape == crop.shape
    assert e.label in explainer.info.labels and 0 < e.probability <= 1
    # the context manager released the hooks: nothing stays attached to the model
    assert not explainer.layer._forward_hooks and not explainer.layer._backward_hooks


def test_explicit_target(default_model, real_crops):
    e = GradCamExplainer(default_model).explain(real_crops[1], target=0)
    assert e.target == 0 and e.label == "mpox"


def test_every_arch_has_a_target_layer():
    for arch in ARCHS:
        layer, _ = target_layer(build_model(arch), arch)
        assert layer is not None
