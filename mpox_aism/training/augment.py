"""The paper's training augmentation, rebuilt on albumentations (imgaug is broken on numpy 2).

Gaussian noise, crop-and-resize, affine, cutout, horizontal and vertical flips, gamma contrast and
Gaussian blur, applied in a random order, each with its own probability. It runs on the uint8 RGB
image *before* the shared :func:`mpox_aism.training.preprocess.preprocess`, so the augmented training input
and the serving input go through the same resize and normalisation.

Seeding: albumentations 2.0's ``Compose(seed=…)`` / ``set_random_seed`` give *every* child transform
its own generator built from the *same* seed, so their draws are identical — both flips always fire
together, and of the 2⁸ on/off combinations only a handful ever occur (measured: 400 seeded draws of
HorizontalFlip + VerticalFlip gave "both" or "neither", never one). :func:`seed_augmentation` hands all
children one shared generator instead, so a seeded stream is reproducible *and* its ops independent.
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import torch

from mpox_aism.contracts.preprocess import DEFAULT_IMAGE_SIZE
from mpox_aism.training.preprocess import preprocess


def paper_augmentation(size: int = DEFAULT_IMAGE_SIZE, *, seed: int | None = None) -> A.Compose:
    ops = [
        A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
        A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), ratio=(0.75, 1.333), p=0.5),
        A.Affine(scale=(0.85, 1.15), translate_percent=(-0.08, 0.08), rotate=(-30, 30),
                 shear=(-8, 8), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.05, 0.2),
                        hole_width_range=(0.05, 0.2), fill=0, p=0.3),
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomGamma(gamma_limit=(70, 150), p=0.3),
        A.GaussianBlur(blur_limit=(3, 7), p=0.2),
    ]
    compose = A.Compose([A.RandomOrder(ops, n=len(ops), p=1.0)])
    if seed is not None:
        seed_augmentation(compose, seed)
    return compose


def seed_augmentation(compose: A.BaseCompose, seed: int) -> None:
    """One generator shared by every op (see the module docstring for why not ``set_random_seed``)."""
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))


class TrainTransform:
    """augment → preprocess. Picklable, so DataLoader workers can use it."""

    def __init__(self, size: int = DEFAULT_IMAGE_SIZE, *, seed: int | None = None):
        self.size = size
        self.augment = paper_augmentation(size, seed=seed)

    def reseed(self, seed: int) -> None:
        """Give each DataLoader worker its own augmentation stream."""
        seed_augmentation(self.augment, seed)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return preprocess(self.augment(image=image)["image"], self.size)


class EvalTransform:
    """The serving path: nothing but the shared preprocessing."""

    def __init__(self, size: int = DEFAULT_IMAGE_SIZE):
        self.size = size

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return preprocess(image, self.size)
