"""SimCLR pieces: NT-Xent against the paper's formula, encoder width, views, forward shape, DDP gather."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.models import build_model, classifier_head
from training.ssl import Encoder, ProjectionHead, SimCLR, SimCLRViews, feature_dim, nt_xent_loss


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
