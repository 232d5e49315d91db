"""LP-FT: the split network is the network, and tuning touches a copy's top only."""

import numpy as np
import pytest
import torch

from mpox_aism.model.zoo import build_model
from mpox_aism.training.probe import LinearHead
from mpox_aism.training.toptune import split_model, stem_outputs, top_logits, tune_top


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_top_of_stem_is_the_model(arch):
    model = build_model(arch, image_size=64).eval()
    split = split_model(model, arch, 2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(split.top(split.stem(x)), model(x), atol=1e-5)
    from mpox_aism.model.zoo import classifier_head

    names = {id(p) for p in split.top.parameters()}
    assert id(classifier_head(model).weight) in names
    assert not names & {id(p) for p in split.stem.parameters()}  # the stem is not trainable
    with pytest.raises(ValueError, match="tune-blocks"):
        split_model(model, arch, 999)


def test_tuning_changes_a_copy_not_the_base(tiny_skin8):
    from mpox_aism.training.data import scan_dataset

    samples = scan_dataset(tiny_skin8, verify=False)
    model = build_model("mobilenet_v2", image_size=64).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stem = stem_outputs(split_model(model, "mobilenet_v2", 2).stem, samples, image_size=64, workers=0)
    assert stem.shape[:2] == (len(samples), 2) and stem.dtype == np.float16
    y = np.array([s.label for s in samples])
    head = LinearHead(weight=np.zeros((8, 1280)), bias=np.zeros(8), mean=np.zeros(1280), scale=np.ones(1280),
                      l2=0.1)
    tuned = tune_top(model, "mobilenet_v2", 2, stem, y, np.ones(len(y)), head=head, epochs=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and all(k.startswith(("features.17", "features.18", "classifier")) for k in changed)
    logits = top_logits(tuned, "mobilenet_v2", 2, stem, tta=True)
    assert logits.shape == (len(samples), 8) and np.isfinite(logits).all()
