import albumentations as A
import numpy as np

from mpox_aism.training.augment import EvalTransform, TrainTransform, paper_augmentation, seed_augmentation


def test_the_papers_eight_augmentations_in_random_order():
    compose = paper_augmentation(64)
    (order,) = compose.transforms
    assert isinstance(order, A.RandomOrder)
    names = {type(t).__name__ for t in order.transforms}
    assert names == {"GaussNoise", "RandomResizedCrop", "Affine", "CoarseDropout", "HorizontalFlip",
                     "VerticalFlip", "RandomGamma", "GaussianBlur"}
    assert order.n == len(order.transforms)
    assert all(0 < t.p < 1 for t in order.transforms)  # each with its own random probability


def test_seeded_augmentation_is_reproducible_and_varies():
    img = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    a, b = TrainTransform(64, seed=7), TrainTransform(64, seed=7)
    xa = [a(img) for _ in range(4)]
    xb = [b(img) for _ in range(4)]
    assert all((u == v).all() for u, v in zip(xa, xb, strict=True))
    assert any(not (xa[0] == x).all() for x in xa[1:])


def test_seeded_ops_draw_independently():
    """albumentations' own seeding gives every op the same draws (both flips or neither); ours must not."""
    img = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    aug = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], save_applied_params=True)
    seed_augmentation(aug, 3)
    seen = {tuple(sorted(t[0] for t in aug(image=img)["applied_transforms"])) for _ in range(200)}
    assert seen == {(), ("HorizontalFlip",), ("VerticalFlip",), ("HorizontalFlip", "VerticalFlip")}
    seed_augmentation(aug, 3)
    first = [aug(image=img)["image"] for _ in range(5)]
    seed_augmentation(aug, 3)
    assert all((a == b).all() for a, b in zip(first, [aug(image=img)["image"] for _ in range(5)], strict=True))


def test_eval_transform_is_deterministic():
    img = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    t = EvalTransform(64)
    assert (t(img) == t(img)).all()
