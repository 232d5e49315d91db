"""EfficientNet-Lite: weights loaded strictly and hash-checked, and proven right on real photos."""

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torchvision.models import MobileNet_V2_Weights

from mpox_aism.model.efficientnet_lite import LITE_PARAMS, EfficientNetLite, imagenet_weights_file, load_lite_imagenet
from mpox_aism.model.zoo import build_model, classifier_head, load_imagenet_weights
from mpox_aism.training.preprocess import preprocess

IMAGENET_NAMES = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # the 1000 names, no download
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
COFFEE = {"cup", "espresso", "coffee mug", "eggnog"}


def _need(arch: str) -> None:
    try:
        imagenet_weights_file(arch)
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("arch", sorted(LITE_PARAMS))
def test_imagenet_head_names_real_objects(arch):
    """Loadable is not enough: the 1000-class head must see a tabby cat and a cup of coffee."""
    _need(arch)
    size = LITE_PARAMS[arch][2]
    model = EfficientNetLite(arch, num_classes=1000, image_size=size)
    load_lite_imagenet(model, arch, keep_head=True)
    model.eval()
    x = torch.stack([preprocess(skdata.chelsea(), size), preprocess(skdata.coffee(), size)])
    with torch.no_grad():
        top5 = model(x).softmax(1).topk(5).indices
    assert CATS & {IMAGENET_NAMES[i] for i in top5[0]}, [IMAGENET_NAMES[i] for i in top5[0]]
    assert COFFEE & {IMAGENET_NAMES[i] for i in top5[1]}, [IMAGENET_NAMES[i] for i in top5[1]]
    assert IMAGENET_NAMES[top5[0, 0]] in CATS and IMAGENET_NAMES[top5[1, 0]] in COFFEE


@pytest.mark.parametrize("arch", sorted(LITE_PARAMS))
def test_every_tensor_loaded_strictly(arch):
    _need(arch)
    model = build_model(arch, image_size=224)
    load_imagenet_weights(model, arch)
    ref = torch.load(imagenet_weights_file(arch).path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    body = [k for k in ref if not k.startswith("_fc.")]
    assert set(own) == set(ref)  # same names both ways: nothing missing, nothing unexpected
    assert all(torch.equal(own[k], ref[k]) for k in body)
    assert classifier_head(model).out_features == 8  # the 8-way head is the model's own


def test_a_wrong_file_is_refused(tmp_path, monkeypatch):
    _need("efficientnet_lite0")
    import mpox_aism.model.efficientnet_lite as lite

    fake = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save({"x": torch.zeros(1)}, fake)
    monkeypatch.setattr(lite, "imagenet_weights_file",
                        lambda arch: lite.WeightsFile(path=fake, sha256=lite.LITE_WEIGHTS[arch][2]))
    with pytest.raises(ValueError, match="sha256"):
        load_lite_imagenet(EfficientNetLite("efficientnet_lite0"), "efficientnet_lite0")


@pytest.mark.parametrize("size", [224, 260, 255])
def test_same_padding_gives_tensorflow_shapes(size):
    model = EfficientNetLite("efficientnet_lite2", num_classes=8, image_size=size).eval()
    with torch.no_grad():
        feats = model.features(torch.zeros(1, 3, size, size))
    side = int(np.ceil(size / 32))
    assert feats.shape == (1, 1280, side, side) and model.feature_size == side
    assert len(model._blocks) == 21  # Lite2: 1 + 3 + 3 + 4 + 4 + 5 + 1 blocks
