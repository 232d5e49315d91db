import pytest
import torch

from mpox_aism.model.zoo import (
    ARCHS,
    PAPER_ARCHS,
    build_model,
    classifier_head,
    load_imagenet_weights,
    mobilenet_v2_imagenet_path,
)


def test_the_papers_ten_plus_default():
    assert len(PAPER_ARCHS) == 10 and "resnext101_64x4d" in PAPER_ARCHS
    assert ARCHS[0] == "mobilenet_v2"


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_builds_with_an_8_way_head(arch):
    model = build_model(arch)
    assert classifier_head(model).out_features == 8


@pytest.mark.parametrize("arch", ["mobilenet_v2", "googlenet", "efficientnet_b0"])
def test_small_archs_forward(arch):
    model = build_model(arch).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 8)


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet9000")


def test_imagenet_weights_load_offline():
    try:
        mobilenet_v2_imagenet_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    model = build_model("mobilenet_v2")
    before = model.features[0][0].weight.clone()
    load_imagenet_weights(model, "mobilenet_v2")
    assert not torch.equal(before, model.features[0][0].weight)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        load_imagenet_weights(build_model("resnext101_64x4d"), "resnext101_64x4d")
