"""SimCLR building blocks: two-view augmentation, encoder, projection head, NT-Xent loss.

Small composable pieces in the style of lightly: :class:`SimCLRViews` turns one RGB uint8 image
into two augmented tensors (on the CPU, in DataLoader workers), :class:`DeviceViews` does the same
for a whole batch at once on the batch's device (the GPU, where per-image CPU augmentation starves
a large encoder), :class:`Encoder` is any torchvision classifier of
:mod:`mpox_aism.model.zoo` with its head replaced by ``nn.Identity`` (so its state_dict keys are those
of ``build_model(arch)`` minus the head, and ``mpox-aism train --init encoder.pt`` can load it),
:class:`ProjectionHead` maps features to the space the loss works in, and :func:`nt_xent_loss` is
the paper's equations (1)–(3), i.e. the SimCLR loss.

Only torch/torchvision are imported (no albumentations): the GPU machine that runs the long
pretraining has torchvision but not the supervised training stack.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.ops import roi_align
from torchvision.transforms import v2

from mpox_aism.contracts.preprocess import MEAN, STD, check_image
from mpox_aism.model.zoo import build_model, classifier_head, load_imagenet_weights


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel of about 10% of the image side (SimCLR's choice; odd, as a centred kernel needs)."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


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
        kernel = blur_kernel_size(image_size)
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


# RGB → grayscale luma, as torchvision's rgb_to_grayscale (used by its contrast, saturation, grayscale)
_GRAY = (0.2989, 0.587, 0.114)
# RGB → YIQ (NTSC): hue is the angle in the I–Q plane, so a hue shift is one 3×3 matrix per image
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_CROP_TRIES = 10  # as RandomResizedCrop: the first acceptable of 10 draws, else the whole image
# one uniform draw per image gives everything a view needs, in these columns
_DRAWS = {"scale": _CROP_TRIES, "log_ratio": _CROP_TRIES, "pos": 2, "flip": 1, "jitter": 1, "factors": 4,
          "gray": 1, "blur": 1, "sigma": 1}


class DeviceViews(nn.Module):
    """A batch N×3×H×W (uint8 0–255 or float 0–1, any device) → two augmented, normalised views.

    The batched counterpart of :class:`SimCLRViews`, same parameters and meaning: per-image CPU
    augmentation in DataLoader workers (~25 ms per image for two views) could not feed ResNeXt-101 on
    an H100, while these few batched kernels run where the batch already is. Every image gets its own
    random parameters, all drawn from ``generator`` (on the batch's device, or on the CPU) at once:

    * random resized crop — scale in [``min_scale``, 1] of the area, log-uniform aspect ratio in
      ``ratio``, the first acceptable of 10 draws else the whole image (centre, ratio clamped), as
      ``RandomResizedCrop``; cut and resized by one ``roi_align`` (sub-pixel boxes; its adaptive
      sampling averages ⌈box/size⌉² points per output pixel, so shrinking is antialiased);
    * horizontal flip with ``hflip_p``;
    * colour jitter with ``jitter_p``: brightness, contrast and saturation factors in [1−0.8s, 1+0.8s]
      (torchvision's blend formulas) and a hue shift in ±0.2s of the colour circle (s =
      ``jitter_strength``), done as a rotation in YIQ space (a linear stand-in for HSV's hue shift);
    * grayscale with ``grayscale_p`` (torchvision's luma weights, three equal channels);
    * Gaussian blur with ``blur_p``, σ uniform in ``blur_sigma``, kernel ≈10% of the side (as
      SimCLRViews), reflect padding: separable depthwise convolution, one kernel per image.

    Two departures from torchvision, both for speed: jitter runs in a fixed order (brightness,
    contrast, saturation, hue; torchvision shuffles it per image), and jitter and grayscale are all
    linear, so they are composed into one affine colour map per image, applied in one pass and
    clamped to [0, 1] once at the end instead of after every step (they differ only where an
    intermediate step would have clipped). Normalisation uses the project's
    :data:`~mpox_aism.training.preprocess.MEAN`/``STD``; it comes before the blur, which is the same thing
    (the kernel sums to 1) but lets the blur be the last pass.
    """

    def __init__(self, image_size: int = 224, *, min_scale: float = 0.2, jitter_p: float = 0.8,
                 jitter_strength: float = 0.5, grayscale_p: float = 0.2, blur_p: float = 0.5,
                 hflip_p: float = 0.5, blur_sigma: tuple[float, float] = (0.1, 2.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        super().__init__()
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.image_size = image_size
        self.min_scale = min_scale
        self.ratio = ratio
        self.hflip_p, self.jitter_p, self.grayscale_p, self.blur_p = hflip_p, jitter_p, grayscale_p, blur_p
        s = jitter_strength
        self.jitter = (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)  # brightness, contrast, saturation, hue
        self.blur_sigma = blur_sigma
        self.kernel = blur_kernel_size(image_size)
        yiq = torch.tensor(_YIQ, dtype=torch.float64)
        # buffers, not constants: they follow .to(device); not persistent, nothing to checkpoint
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(_GRAY), persistent=False)
        self.register_buffer("yiq", yiq.float(), persistent=False)
        self.register_buffer("yiq_inv", torch.linalg.inv(yiq).float(), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an N×3×H×W batch, got shape {tuple(images.shape)}")
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        return self._view(x, generator), self._view(x, generator)

    def _draw(self, n: int, device: torch.device, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        where = generator.device if generator is not None else device
        u = torch.rand(n, sum(_DRAWS.values()), generator=generator, device=where).to(device)
        return dict(zip(_DRAWS, u.split(list(_DRAWS.values()), dim=1), strict=True))

    def _view(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = self._draw(x.shape[0], x.device, generator)
        v = self._crop(x, u)
        if self.hflip_p > 0:
            v = torch.where(_chance(u["flip"], self.hflip_p), v.flip(-1), v)
        if self.jitter_p > 0 or self.grayscale_p > 0:
            a, t = self._colour_map(v, u)
            v = (torch.einsum("nij,njhw->nihw", a, v) + t[..., None, None]).clamp_(0, 1)
        v = (v - self.mean) / self.std
        if self.blur_p > 0:
            v = torch.where(_chance(u["blur"], self.blur_p), self._blur(v, u["sigma"]), v)
        return v.contiguous()

    def _crop(self, x: torch.Tensor, u: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cut and resize every image's box in one roi_align."""
        n, _, h, w = x.shape
        index = torch.arange(n, device=x.device, dtype=x.dtype)
        boxes = torch.cat([index[:, None], self._boxes(h, w, u)], dim=1)
        # aligned=True: box edges are pixel edges, so the whole-image box is a plain resize
        return roi_align(x, boxes, (self.image_size, self.image_size), spatial_scale=1.0,
                         sampling_ratio=-1, aligned=True).clamp_(0, 1)

    def _boxes(self, h: int, w: int, u: dict[str, torch.Tensor]) -> torch.Tensor:
        """RandomResizedCrop's box distribution for an H×W image: N×4 (x0, y0, x1, y1) in pixels."""
        area = h * w * (self.min_scale + (1 - self.min_scale) * u["scale"])
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(lo + (hi - lo) * u["log_ratio"])
        cw, ch = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        ok = (cw <= w) & (ch <= h)
        first = ok.int().argmax(dim=1, keepdim=True)  # the first acceptable try (0 when none is)
        fw, fh = float(w), float(h)  # fallback: the whole image, or its centre at the nearest allowed ratio
        if w / h < min(self.ratio):
            fh = w / min(self.ratio)
        elif w / h > max(self.ratio):
            fw = h * max(self.ratio)
        any_ok = ok.any(dim=1)
        cw = torch.where(any_ok, cw.gather(1, first).squeeze(1), fw)
        ch = torch.where(any_ok, ch.gather(1, first).squeeze(1), fh)
        x0 = torch.where(any_ok, u["pos"][:, 0] * (w - cw), (w - fw) / 2)
        y0 = torch.where(any_ok, u["pos"][:, 1] * (h - ch), (h - fh) / 2)
        return torch.stack([x0, y0, x0 + cw, y0 + ch], dim=1)

    def _colour_map(self, v: torch.Tensor, u: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image affine colour map (A N×3×3, t N×3): jitter then grayscale, as ``A·rgb + t``.

        Images that get neither keep the exact identity (not a float round trip through YIQ).
        """
        n, dev = v.shape[0], v.device
        eye = torch.eye(3, device=dev).expand(n, 3, 3)
        a, t = eye, torch.zeros(n, 3, device=dev)
        ones_luma = torch.ones(3, 1, device=dev) * self.luma  # rgb ↦ (luma, luma, luma)
        if self.jitter_p > 0:
            f = u["factors"]
            b, c, s = ((1 - m + 2 * m * f[:, i]).clamp(min=0).view(n, 1, 1)
                       for i, m in enumerate(self.jitter[:3]))
            a = b * eye  # brightness: rgb·b
            mean = (v.mean(dim=(2, 3)) @ self.luma).view(n, 1, 1) * b  # luma mean after brightness
            a, t = c * a, ((1 - c) * mean).expand(n, 3, 1)  # contrast: blend with the mean luma
            sat = s * eye + (1 - s) * ones_luma  # saturation: blend with the pixel's luma
            a, t = sat @ a, sat @ t
            # hue: ±0.2s of the circle; minus, as turning I→Q is the opposite of HSV's R→G→B
            theta = -2 * math.pi * self.jitter[3] * (2 * f[:, 3] - 1)
            rot = torch.zeros(n, 3, 3, device=dev)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = theta.cos(), -theta.sin(), theta.sin(), theta.cos()
            hue = self.yiq_inv @ rot @ self.yiq  # rgb → YIQ, turn I/Q, → rgb
            a, t = hue @ a, hue @ t
            jitter = _chance(u["jitter"], self.jitter_p).view(n, 1, 1)
            a, t = torch.where(jitter, a, eye), torch.where(jitter, t, 0).squeeze(2)
        if self.grayscale_p > 0:
            gray = _chance(u["gray"], self.grayscale_p).view(n, 1, 1)
            a = torch.where(gray, ones_luma @ a, a)
            t = torch.where(gray.view(n, 1), t @ ones_luma.T, t)
        return a, t

    def _blur(self, v: torch.Tensor, u_sigma: torch.Tensor) -> torch.Tensor:
        """Per-image Gaussian blur: separable depthwise conv, one kernel per image (groups = 3N)."""
        n, c, h, w = v.shape
        k = self.kernel
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u_sigma  # N×1
        x = torch.arange(k, device=v.device, dtype=v.dtype) - (k - 1) / 2
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # 3N×k
        y = F.pad(v.reshape(1, n * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
        y = F.conv2d(y, kernel.view(n * c, 1, 1, k), groups=n * c)
        y = F.conv2d(y, kernel.view(n * c, 1, k, 1), groups=n * c)
        return y.view(n, c, h, w)


def _chance(u: torch.Tensor, p: float) -> torch.Tensor:
    """N×1 uniforms → an N×1×1×1 mask, true with probability p (broadcasts over C×H×W)."""
    return (u < p).view(-1, 1, 1, 1)


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
    head, so :func:`mpox_aism.model.zoo.load_init_checkpoint` can fine-tune from it.
    """

    def __init__(self, model: nn.Module, arch: str = ""):
        super().__init__()
        self.arch = arch or type(model).__name__.lower()
        self.feature_dim = feature_dim(model)
        _strip_head(model)
        self.backbone = model

    @classmethod
    def build(cls, arch: str, *, image_size: int = 224, imagenet: bool = False) -> Encoder:
        """``imagenet``: start from the hash-checked ImageNet weights (domain-adaptive pretraining)."""
        model = build_model(arch, image_size=image_size)
        if imagenet:
            load_imagenet_weights(model, arch)
        return cls(model, arch)

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
