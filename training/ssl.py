"""SimCLR building blocks: two-view augmentation, encoder, projection head, NT-Xent loss.

Small composable pieces in the style of lightly: :class:`SimCLRViews` turns one RGB uint8 image
into two augmented tensors, :class:`Encoder` is any torchvision classifier of
:mod:`training.models` with its head replaced by ``nn.Identity`` (so its state_dict keys are those
of ``build_model(arch)`` minus the head, and ``mpox-aism train --init encoder.pt`` can load it),
:class:`ProjectionHead` maps features to the space the loss works in, and :func:`nt_xent_loss` is
the paper's equations (1)–(3), i.e. the SimCLR loss.

Only torch/torchvision are imported (no albumentations): the GPU machine that runs the long
pretraining has torchvision but not the supervised training stack.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from training.models import build_model, classifier_head
from training.preprocess import MEAN, STD, check_image


class SimCLRViews:
    """RGB uint8 H×W×3 → two independently augmented float32 tensors 3×S×S, normalised.

    The paper's crop, flip and colour jitter (p=0.8), plus the two ops the SimCLR paper found to
    matter for contrastive learning: random grayscale (p=0.2; stops the network from solving the
    task by colour histograms alone) and Gaussian blur (p=0.5, kernel ≈10% of the image side).
    ``seed`` makes the stream reproducible; without it the global torch RNG is used, which
    DataLoader workers and ``seed_everything`` already seed per worker/rank.
    """

    def __init__(self, image_size: int = 224, *, min_scale: float = 0.2, jitter_p: float = 0.8,
                 jitter_strength: float = 0.5, grayscale_p: float = 0.2, blur_p: float = 0.5,
                 hflip_p: float = 0.5, seed: int | None = None):
        s = jitter_strength
        kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)  # odd, as GaussianBlur requires
        self.image_size = image_size
        self.transform = v2.Compose([
            v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=hflip_p),
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=jitter_p),
            v2.RandomGrayscale(p=grayscale_p),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ])
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def reseed(self, seed: int) -> None:
        """Give each DataLoader worker its own stream (a seeded transform is copied into each)."""
        self._rng = np.random.default_rng(seed)

    def _view(self, image: tv_tensors.Image) -> torch.Tensor:
        return self.transform(image).as_subclass(torch.Tensor)

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        check_image(image)
        x = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        if self._rng is None:
            return self._view(x), self._view(x)
        # torchvision draws from the global RNG: fork it so a seeded instance neither depends on
        # nor disturbs anyone else's random stream
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self._rng.integers(2**63 - 1)))
            return self._view(x), self._view(x)


class ProjectionHead(nn.Sequential):
    """Linear → BN → ReLU → Linear (SimCLR's g(·)); the loss acts on its output, not the features."""

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128):
        hidden = hidden_dim or in_dim
        super().__init__(nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))
        self.in_dim, self.out_dim = in_dim, out_dim


def feature_dim(model: nn.Module) -> int:
    """Width of the features a classifier feeds its head (2048 for ResNeXt-101, 1280 for MobileNetV2).

    Read from the head itself rather than assumed: the paper's public script sized the projection
    for 512 features on a 2048-wide ResNeXt.
    """
    return classifier_head(model).in_features


def _strip_head(model: nn.Module) -> None:
    """Replace the head (and the dropout beside it) by ``nn.Identity``, keeping every other name."""
    head = classifier_head(model)
    name = next(n for n, m in model.named_modules() if m is head)
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, nn.Identity())
    if isinstance(parent, nn.Sequential):  # the head's dropout regularises a classifier, not features
        for i, m in enumerate(parent):
            if isinstance(m, nn.Dropout):
                parent[i] = nn.Identity()


class Encoder(nn.Module):
    """A torchvision classifier without its head: images → features of width ``feature_dim``.

    ``backbone.state_dict()`` has exactly the keys of ``build_model(arch).state_dict()`` minus the
    head, so :func:`training.models.load_init_checkpoint` can fine-tune from it.
    """

    def __init__(self, model: nn.Module, arch: str = ""):
        super().__init__()
        self.arch = arch or type(model).__name__.lower()
        self.feature_dim = feature_dim(model)
        _strip_head(model)
        self.backbone = model

    @classmethod
    def build(cls, arch: str, *, image_size: int = 224) -> Encoder:
        return cls(build_model(arch, image_size=image_size), arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.backbone(x), 1)


class SimCLR(nn.Module):
    """Encoder f(·) + projection head g(·): images → projections z = g(f(x))."""

    def __init__(self, encoder: Encoder, projection: ProjectionHead | None = None, *, out_dim: int = 128):
        super().__init__()
        self.encoder = encoder
        self.projection = projection or ProjectionHead(encoder.feature_dim, out_dim=out_dim)
        if self.projection.in_dim != encoder.feature_dim:
            raise ValueError(f"projection head expects {self.projection.in_dim} features but the "
                             f"{encoder.arch} encoder gives {encoder.feature_dim}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(x))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(z: torch.Tensor) -> torch.Tensor:
    """All ranks' ``z`` concatenated, with gradient flowing back to each rank's own part."""
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated since torch 2.14 for a private API; still correct
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(z), dim=0)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, *,
                 gather_distributed: bool = True) -> torch.Tensor:
    """NT-Xent (the paper's eqs. 1–3): mean over all 2N anchors of −log softmax(sim/τ) at the positive.

    ``z1[k]`` and ``z2[k]`` are the two views of image k. Each anchor's denominator runs over every
    other augmented sample (k ≠ i), positive included. Under DDP with ``gather_distributed`` the
    negatives come from the global batch: every rank's anchors are compared against all ranks'
    projections (gathered with gradient), and DDP's gradient averaging then equals the gradient of
    the global-batch loss.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two N×D projections of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.dtype in (torch.float16, torch.bfloat16):  # exp(sim/τ) needs more range than AMP gives
        z1, z2 = z1.float(), z2.float()
    n = z1.shape[0]
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    rank, world = 0, 1
    all1, all2 = z1, z2
    if gather_distributed and _distributed():
        rank, world = dist.get_rank(), dist.get_world_size()
        all1, all2 = _gather(z1), _gather(z2)
    anchors = torch.cat([z1, z2])                       # 2N local anchors
    candidates = torch.cat([all1, all2])                # 2·W·N samples: [all views 1, all views 2]
    logits = anchors @ candidates.T / temperature
    local = torch.arange(n, device=z1.device) + rank * n
    own = torch.cat([local, local + world * n])         # each anchor's own column (k = i)
    positive = torch.cat([local + world * n, local])    # the other view of the same image
    logits[torch.arange(2 * n, device=z1.device), own] = float("-inf")
    return F.cross_entropy(logits, positive)
