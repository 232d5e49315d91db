import numpy as np
import pytest
import torch

from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.preprocess import MEAN, STD, preprocess_batch, preprocess_numpy
from mpox_aism.training.augment import EvalTransform, TrainTransform
from mpox_aism.training.data import ImageDataset, scan_dataset
from mpox_aism.training.preprocess import preprocess
from tests.conftest import need_skin8


def test_shape_dtype_and_normalisation():
    img = np.full((50, 80, 3), 255, np.uint8)
    x = preprocess(img, 64)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    expected = (1.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), expected, rtol=1e-6)


def test_channel_order_is_rgb():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255  # pure red in RGB
    x = preprocess(img, 8)
    assert x[0].mean() > 2 and x[1].mean() < 0 and x[2].mean() < 0


@pytest.mark.parametrize("bad", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5), np.uint8),
                                 np.zeros((5, 5, 3), np.float32), np.zeros((5, 5, 4), np.uint8)])
def test_bad_input_is_rejected_clearly(bad):
    with pytest.raises(ValueError):
        preprocess(bad)


def test_batch_matches_single():
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (40 + i, 60, 3), dtype=np.uint8) for i in range(3)]
    b = preprocess_batch(ims, 32)
    assert b.shape == (3, 3, 32, 32)
    for i, im in enumerate(ims):
        np.testing.assert_array_equal(b[i], preprocess_numpy(im, 32))


def test_training_eval_path_equals_serving_preprocess():
    """The tensor the model is validated on is bit-identical to what serving computes."""
    root = need_skin8()
    samples = scan_dataset(root, verify=False)[:5]
    ds = ImageDataset(samples, EvalTransform(224))
    for i, s in enumerate(samples):
        x, label = ds[i]
        assert label == s.label
        assert torch.equal(x, preprocess(load_rgb(s.path), 224))


def test_train_transform_ends_in_the_shared_preprocess():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    t = TrainTransform(96, seed=3)
    x = t(img)
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32
