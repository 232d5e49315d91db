"""The model directory: a probe's model.pt stores its head and names its ImageNet backbone."""

from __future__ import annotations

import pytest
import torch

from mpox_aism.model import modeldir
from mpox_aism.model.modeldir import ModelInfo, load_init_checkpoint, load_model, save_model
from mpox_aism.model.zoo import build_model, classifier_head, load_imagenet_weights

ARCH = "mobilenet_v2+efficientnet_lite2"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A fused network with ImageNet branches and a fitted-looking head, saved both ways."""
    model = build_model(ARCH, image_size=96)
    try:
        load_imagenet_weights(model, ARCH)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    torch.nn.init.normal_(classifier_head(model).weight)
    full, slim = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("slim")
    save_model(full, model.eval(), ModelInfo(arch=ARCH, image_size=96))
    save_model(slim, model, ModelInfo(arch=ARCH, image_size=96), omit_imagenet=True)
    return model, full, slim


def test_the_slim_file_holds_only_the_head_and_loads_the_same_network(probe):
    _, full, slim = probe
    assert (slim / "model.pt").stat().st_size < 200_000 < 20_000_000 < (full / "model.pt").stat().st_size
    blob = torch.load(slim / "model.pt", weights_only=False)
    assert sorted(blob["state_dict"]) == ["fc.bias", "fc.weight"] and len(blob["imagenet_keys"]) > 500
    a, info_a = load_model(full)
    b, info_b = load_model(slim)
    assert info_a.model_version == info_b.model_version  # the hash is of the whole network
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_other_imagenet_weights_are_refused(probe, monkeypatch):
    _, _, slim = probe
    real = modeldir._imagenet_state

    def perturbed(info):
        state = real(info)
        key = next(k for k in state if k.endswith("weight"))
        state[key] = state[key] + 1e-3
        return state

    monkeypatch.setattr(modeldir, "_imagenet_state", perturbed)
    with pytest.raises(ValueError, match="not the weights it was trained on"):
        load_model(slim)


def test_a_slim_model_initialises_another_run(probe):
    model, _, slim = probe
    fresh = build_model(ARCH, image_size=96)
    copied, _ = load_init_checkpoint(fresh, slim / "model.pt")
    assert copied > 500
    assert torch.equal(fresh.branches[0].features[0][0].weight, model.branches[0].features[0][0].weight)


def test_init_checkpoint_copies_body_not_head(tmp_path):
    src = build_model("mobilenet_v2")
    torch.save({"state_dict": src.state_dict()}, tmp_path / "enc.pt")
    dst = build_model("mobilenet_v2")
    copied, _ = load_init_checkpoint(dst, tmp_path / "enc.pt")
    assert copied > 100
    assert torch.equal(src.features[3].conv[0][0].weight, dst.features[3].conv[0][0].weight)
    assert not torch.equal(classifier_head(src).weight, classifier_head(dst).weight)
    torch.save({"state_dict": build_model("googlenet").state_dict()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no tensor matches"):
        load_init_checkpoint(build_model("mobilenet_v2"), tmp_path / "other.pt")
