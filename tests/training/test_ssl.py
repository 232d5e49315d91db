"""SimCLR pieces: NT-Xent against the paper's formula, encoder width, views, forward shape, DDP gather."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mpox_aism.contracts.preprocess import MEAN, STD
from mpox_aism.model.zoo import build_model, classifier_head
from mpox_aism.training.preprocess import preprocess
from mpox_aism.training.ssl import DeviceViews, Encoder, ProjectionHead, SimCLR, SimCLRViews, feature_dim, nt_xent_loss


def _direct_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """Eqs. (1)–(3) literally: views interleaved as 2k−1, 2k; ℓ(i,j) with k ≠ i in the denominator."""
    z = [v for pair in zip(z1, z2, strict=True) for v in pair]

    def sim(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    def ell(i, j):
        den = sum(math.exp(sim(z[i], z[k]) / tau) for k in range(len(z)) if k != i)
        return -math.log(math.exp(sim(z[i], z[j]) / tau) / den)

    n = len(z1)
    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_nt_xent_matches_the_papers_equations(tau):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(_direct_nt_xent(z1, z2, tau), abs=1e-6)


def test_matching_views_give_a_lower_loss_than_random_ones():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(16, 32, generator=g)
    assert nt_xent_loss(z1, z1.clone()) < nt_xent_loss(z1, torch.randn(16, 32, generator=g))


def test_low_precision_projections_give_a_finite_float32_loss_with_gradient():
    z1 = torch.randn(8, 16).bfloat16().requires_grad_()
    loss = nt_xent_loss(z1, torch.randn(8, 16).bfloat16())
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and z1.grad is not None


def test_mismatched_projections_are_refused():
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent_loss(torch.randn(4, 8), torch.randn(5, 8))


def _ddp_worker(rank: int, world: int, init: str, z1: torch.Tensor, z2: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        n = len(z1) // world
        a = z1[rank * n:(rank + 1) * n].clone().requires_grad_()
        b = z2[rank * n:(rank + 1) * n].clone().requires_grad_()
        loss = nt_xent_loss(a, b, 0.5)
        loss.backward()
        out[rank] = (loss.item(), a.grad.clone(), b.grad.clone())
    finally:
        dist.destroy_process_group()


def test_distributed_loss_uses_the_global_batch(tmp_path):
    """Two gloo ranks: their mean loss is the global-batch loss, and after DDP's gradient averaging
    each rank's projections get the global loss's gradient."""
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'rdv'}", z1, z2, out), nprocs=2, join=True)

    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    full = nt_xent_loss(a, b, 0.5)
    full.backward()
    assert (out[0][0] + out[1][0]) / 2 == pytest.approx(full.item(), abs=1e-5)
    grads = (torch.cat([out[0][1], out[1][1]]), torch.cat([out[0][2], out[1][2]]))
    # each rank's gradient sums all ranks' losses; DDP divides by the world size
    torch.testing.assert_close(grads[0] / 2, a.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(grads[1] / 2, b.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(("arch", "width"), [("mobilenet_v2", 1280), ("resnext101_64x4d", 2048)])
def test_projection_head_is_sized_to_the_encoder(arch, width):
    model = build_model(arch)
    assert feature_dim(model) == classifier_head(model).in_features == width
    simclr = SimCLR(Encoder(model, arch))
    assert simclr.encoder.feature_dim == width
    assert simclr.projection[0].in_features == width and simclr.projection[-1].out_features == 128


def test_a_mis_sized_head_is_refused():
    with pytest.raises(ValueError, match="expects 512 features"):
        SimCLR(Encoder.build("mobilenet_v2"), ProjectionHead(512))


def test_encoder_keeps_the_classifier_key_names_minus_the_head():
    encoder = Encoder.build("mobilenet_v2")
    own = set(build_model("mobilenet_v2").state_dict())
    assert set(encoder.backbone.state_dict()) == own - {"classifier.1.weight", "classifier.1.bias"}


def test_simclr_forward_shape_on_mobilenet_v2():
    model = SimCLR(Encoder.build("mobilenet_v2", image_size=32)).train()
    x = torch.randn(4, 3, 32, 32)
    assert model(x).shape == (4, 128)
    assert model.encoder(x).shape == (4, 1280)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (50, 40, 3), dtype=np.uint8)


def test_views_are_two_different_normalised_tensors():
    v1, v2 = SimCLRViews(32, seed=0)(_image())
    assert v1.shape == v2.shape == (3, 32, 32)
    assert v1.dtype == v2.dtype == torch.float32 and type(v1) is torch.Tensor
    assert not torch.equal(v1, v2)
    assert v1.min() < 0 < v1.max()  # mean/std normalised, not [0, 1]


def test_seeded_views_repeat_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    a = SimCLRViews(32, seed=3)(_image())
    assert torch.rand(1) == expected
    b = SimCLRViews(32, seed=3)(_image())
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_views_refuse_what_is_not_an_rgb_image():
    with pytest.raises(ValueError, match="uint8"):
        SimCLRViews(32)(np.zeros((8, 8, 3), dtype=np.float32))


# ------------------------------------------------------------------- DeviceViews (batched views)

PLAIN = {"min_scale": 1.0, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "hflip_p": 0.0}


def _batch(n: int = 4, h: int = 50, w: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8))


def _smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB uint8 picture (resampling methods agree on it, unlike on pixel noise)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def _unnormalise(v: torch.Tensor) -> torch.Tensor:
    return v * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_device_views_are_two_different_normalised_batches():
    x = _batch()
    v1, v2 = DeviceViews(32)(x, _seeded(0))
    assert v1.shape == v2.shape == (4, 3, 32, 32)
    assert v1.dtype == v2.dtype == torch.float32 and v1.device == x.device
    assert not torch.equal(v1, v2)
    assert v1.min() < 0 < v1.max()  # mean/std normalised, not [0, 1]
    for v in (v1, v2):  # every op keeps pixels in [0, 1] before normalisation
        assert _unnormalise(v).min() >= -1e-5 and _unnormalise(v).max() <= 1 + 1e-5


def test_each_image_of_a_batch_gets_its_own_augmentation():
    same = _batch(n=1).expand(6, 3, 50, 40)
    v1, _ = DeviceViews(32)(same, _seeded(1))
    assert all(not torch.equal(v1[0], v1[i]) for i in range(1, 6))


@pytest.mark.parametrize(("h", "w", "atol"), [(64, 64, 0.01), (56, 64, 0.1)])
def test_device_views_without_augmentation_are_the_plain_preprocessing(h, w, atol):
    """No jitter/grayscale/blur/flip and min_scale=1: the whole image, resized and normalised —
    what ``preprocess`` (cv2 INTER_AREA) gives, exactly up to its uint8 rounding at a 2× shrink."""
    image = _smooth(h, w)
    v1, v2 = DeviceViews(32, **PLAIN)(_chw(image), _seeded(0))
    assert torch.equal(v1, v2)
    torch.testing.assert_close(v1[0], preprocess(image, 32), atol=atol, rtol=0)
    float_input, _ = DeviceViews(32, **PLAIN)(_chw(image).float() / 255)
    torch.testing.assert_close(float_input, v1, atol=1e-5, rtol=0)


def test_flip_with_p1_mirrors_the_view():
    x = _chw(_smooth(48, 48))
    plain, _ = DeviceViews(32, **PLAIN)(x)
    flipped, _ = DeviceViews(32, **{**PLAIN, "hflip_p": 1.0})(x)
    torch.testing.assert_close(flipped, plain.flip(-1), atol=1e-6, rtol=0)
    assert not torch.allclose(flipped, plain)


def test_grayscale_with_p1_gives_three_equal_channels():
    v1, v2 = DeviceViews(32, grayscale_p=1.0)(_batch(), _seeded(2))  # jitter and blur left on
    for v in (v1, v2):
        rgb = _unnormalise(v)
        torch.testing.assert_close(rgb[:, 0], rgb[:, 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(rgb[:, 0], rgb[:, 2], atol=1e-5, rtol=0)
    colour, _ = DeviceViews(32, **PLAIN)(_batch())
    assert not torch.allclose(_unnormalise(colour)[:, 0], _unnormalise(colour)[:, 1], atol=1e-2)


def test_blur_with_p1_is_torchvisions_gaussian_blur():
    x = torch.rand(2, 3, 32, 32, generator=_seeded(3))
    views = DeviceViews(32, **{**PLAIN, "blur_p": 1.0, "blur_sigma": (1.5, 1.5)})
    v, _ = views(x)
    expected = TF.normalize(TF.gaussian_blur(x, [views.kernel] * 2, [1.5, 1.5]), MEAN, STD)
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)


def test_colour_jitter_uses_torchvisions_formulas_where_nothing_clips():
    """Brightness, contrast and saturation as torchvision's blends (hue factor at 0 here)."""
    views = DeviceViews(16, jitter_strength=0.3)
    x = torch.rand(6, 3, 16, 16, generator=_seeded(4)) * 0.3 + 0.35  # mid-range: no step clips
    u = views._draw(6, x.device, _seeded(5))
    u["jitter"].zero_()
    u["gray"].fill_(1)  # jitter on, grayscale off
    u["factors"][:, 3] = 0.5  # no hue shift
    a, t = views._colour_map(x, u)
    got = torch.einsum("nij,njhw->nihw", a, x) + t[..., None, None]
    for i in range(6):
        b, c, s = (1 - 0.24 + 0.48 * float(u["factors"][i, j]) for j in range(3))
        expected = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b), c), s)
        torch.testing.assert_close(got[i], expected, atol=1e-5, rtol=0)


def test_crop_boxes_follow_random_resized_crop():
    views, n, h, w = DeviceViews(32), 4000, 200, 300
    boxes = views._boxes(h, w, views._draw(n, torch.device("cpu"), _seeded(6)))
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    eps = 1e-3
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w + eps).all() and (boxes[:, 3] <= h + eps).all()
    area = bw * bh / (h * w)
    assert area.min() >= 0.2 - eps and area.max() <= 1 + eps
    assert (bw / bh).min() >= 3 / 4 - eps and (bw / bh).max() <= 4 / 3 + eps
    torch.manual_seed(0)
    tv = [v2.RandomResizedCrop.get_params(torch.zeros(3, h, w), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    tv_area = np.mean([bh_ * bw_ for _, _, bh_, bw_ in tv]) / (h * w)
    assert float(area.mean()) == pytest.approx(tv_area, abs=0.02)


def test_seeded_device_views_repeat_and_leave_the_global_rng_alone():
    x, views = _batch(), DeviceViews(32)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    a = views(x, _seeded(7))
    assert torch.rand(1) == expected
    b = views(x, _seeded(7))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    c = views(x, _seeded(8))
    assert not torch.equal(a[0], c[0])


def test_device_views_refuse_what_is_not_an_rgb_batch():
    with pytest.raises(ValueError, match="N×3×H×W"):
        DeviceViews(32)(torch.zeros(3, 8, 8, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_views_on_cuda_match_the_cpu_given_the_same_draws():
    """A CPU generator gives both devices the same parameters: the outputs must then agree."""
    x = _batch(n=8, h=60, w=60)
    views = DeviceViews(32)
    cpu = views(x, _seeded(9))
    cuda = views.to("cuda")(x.cuda(), _seeded(9))
    for p, q in zip(cpu, cuda, strict=True):
        assert q.is_cuda
        torch.testing.assert_close(q.cpu(), p, atol=1e-3, rtol=0)
