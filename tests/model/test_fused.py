"""Two backbones, one head: the fused network is still "feature map → GAP → one linear layer"."""

from __future__ import annotations

import cv2
import pytest
import torch
from torch import nn

from mpox_aism.inference.cam import WithClassMaps, supports_class_maps
from mpox_aism.inference.gradcam import target_layer
from mpox_aism.model.fused import FusedBackbones, fused_parts
from mpox_aism.model.zoo import FUSED_ARCHS, build_model, classifier_head, load_imagenet_weights
from mpox_aism.training.data import Sample
from mpox_aism.training.preprocess import preprocess
from mpox_aism.training.probe import extract_features

ARCH = "mobilenet_v2+efficientnet_lite2"


def test_names():
    assert fused_parts(ARCH) == ("mobilenet_v2", "efficientnet_lite2")
    assert fused_parts("mobilenet_v2") == ()
    assert ARCH in FUSED_ARCHS


def test_one_head_on_both_branches_and_no_unused_heads():
    model = build_model(ARCH, image_size=96).eval()
    assert classifier_head(model) is model.fc and model.fc.in_features == 1280 + 1280
    assert [k for k in model.state_dict() if "classifier" in k or "_fc" in k] == []  # branch heads dropped
    assert target_layer(model, ARCH)[0] is model.fuse and supports_class_maps(ARCH)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 96, 96)).shape == (2, 8)


def test_class_maps_are_exact_cam():
    """Mean of each class map + bias == the logit: pooling and the linear head commute."""
    torch.manual_seed(0)
    model = build_model(ARCH, image_size=128).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        logits, maps = WithClassMaps(model, ARCH)(x)
    assert maps.shape == (2, 8, 4, 4)
    torch.testing.assert_close(maps.mean(dim=(2, 3)) + model.fc.bias, logits, atol=1e-5, rtol=1e-5)


def test_probe_features_are_the_concatenated_pooled_maps(real_crops, tmp_path):
    """The linear probe's feature hook reads the fused head's input: both branches' pooled features."""
    model = build_model(ARCH, image_size=96).eval()
    path = tmp_path / "crop.png"
    cv2.imwrite(str(path), cv2.cvtColor(real_crops[0], cv2.COLOR_RGB2BGR))
    feats = extract_features(model, [Sample(path=path, label=0, group="g")], image_size=96, flip=False, desc=None)
    assert feats.shape == (1, 1, 2560)
    with torch.no_grad():
        x = preprocess(real_crops[0], 96).unsqueeze(0)
        parts = [b.features(x).mean(dim=(2, 3)) for b in model.branches]
    torch.testing.assert_close(torch.from_numpy(feats[0]), torch.cat(parts, dim=1), atol=1e-5, rtol=1e-5)


def test_imagenet_weights_reach_both_branches():
    model = build_model(ARCH)
    try:
        load_imagenet_weights(model, ARCH)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    for branch, part in zip(model.branches, fused_parts(ARCH), strict=True):
        alone = build_model(part)
        load_imagenet_weights(alone, part)
        own = branch.state_dict()
        assert own and all(torch.equal(v, alone.state_dict()[k]) for k, v in own.items())


class _Branch(nn.Module):
    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 4, self.side, self.side)


def test_feature_maps_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="feature maps differ"):
        FusedBackbones({"a": _Branch(7), "b": _Branch(9)}, num_classes=8, image_size=224)
    with pytest.raises(ValueError, match="at least two"):
        FusedBackbones({"a": _Branch(7)}, num_classes=8, image_size=224)
