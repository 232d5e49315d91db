"""Heat maps from the forward pass equal Grad-CAM's for GAP → linear heads (pytorch-grad-cam is the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpox_aism.contracts.heatmap import heat_from_class_map
from mpox_aism.inference.backends import load_classifier
from mpox_aism.inference.cam import WithClassMaps, supports_class_maps
from mpox_aism.inference.gradcam import GradCamExplainer
from mpox_aism.model.modeldir import ModelInfo
from mpox_aism.model.zoo import build_model
from mpox_aism.training.preprocess import preprocess

AGREE = 0.02  # maps in [0, 1]; measured agreement is ~1e-5 (float rounding)


def test_the_shipped_onnx_model_explains_in_its_forward_pass(default_model, real_crops):
    with load_classifier("onnxruntime", default_model) as clf:
        assert clf.can_explain
        reference = GradCamExplainer(default_model)
        for crop in real_crops:
            ours = clf.explain(crop)
            np.testing.assert_allclose(ours.probabilities, clf.predict([crop])[0], atol=1e-6)  # the same answer
            theirs = reference.explain(crop, target=ours.target)
            assert ours.heatmap.shape == crop.shape[:2] and ours.overlay.shape == crop.shape
            assert float(np.abs(ours.heatmap - theirs.heatmap).max()) <= AGREE
            assert ours.label == theirs.label and abs(ours.probability - theirs.probability) < 1e-4


def test_heat_map_at_a_smaller_size_keeps_the_answer(default_model, real_crops):
    crop = real_crops[0]
    with load_classifier("onnxruntime", default_model) as clf:
        small = clf.explain(crop, max_side=64)
        full = clf.explain(crop)
    assert max(small.overlay.shape[:2]) <= 64
    np.testing.assert_allclose(small.probabilities, full.probabilities, atol=1e-7)  # the network saw the whole crop


def test_resnext101_random_weights_agree_with_grad_cam(real_crops):
    """The paper's architecture: the identity holds for ResNeXt's layer4 → avgpool → fc too."""
    torch.manual_seed(0)
    arch = "resnext101_64x4d"
    model = build_model(arch).eval()
    info = ModelInfo(arch=arch, image_size=224, model_version="random")
    reference = GradCamExplainer(model=model, info=info)
    for crop in real_crops[:3]:
        with torch.no_grad():
            logits, maps = WithClassMaps(model, arch)(preprocess(crop, 224).unsqueeze(0))
        target = int(logits.argmax())
        ours = heat_from_class_map(maps[0, target].numpy(), 224, crop.shape[:2])
        theirs = reference.explain(crop, target=target).heatmap  # needs gradients: outside no_grad
        assert float(np.abs(ours - theirs).max()) <= AGREE
    assert not reference.layer._forward_hooks  # neither explainer leaves a hook behind


def test_which_heads_have_class_maps():
    assert supports_class_maps("mobilenet_v2") and supports_class_maps("efficientnet_lite2")
    assert supports_class_maps("resnext101_64x4d")
    for arch in ("vit_b_16", "swin_b", "densenet201"):
        assert not supports_class_maps(arch)
        with pytest.raises(ValueError, match="Grad-CAM"):
            WithClassMaps(torch.nn.Identity(), arch)  # refused before the model is looked at
