"""Is a crop like what the model was trained on? A score on the pooled features and logits, and its threshold.

The classifier always answers with one of its 8 classes, and its softmax confidence is not a
measure of familiarity: a rash of none of the classes, a crop that is not skin, a dark or blurred
frame can all get a confident answer. This score says how far a crop is from the training photos;
above ``threshold`` the crop is *unfamiliar* and goes to a person instead of being called ``clear``
or ``suspected``.

Two measures, each good where the other is blind (docs/RESULTS.md, session 10, chose them among
seven by a rule written before the deciding run):

- **kNN distance** — cosine distance to the ``k``-th nearest training photo, in the top principal
  components of the standardised pooled features (the head's input). It sees what is *unlike a
  photo*: blur, darkness, over-exposure, things that are not skin.
- **energy** — ``−logsumexp(logits)`` of the head itself. It sees a rash the classes do not cover:
  the head's evidence for every class is low.

Each is standardised by its spread on the dev photos *out of fold* (each photo scored by a fit
without its group), and the score is the larger of the two: far from either is unfamiliar. The
threshold is fitted out of fold too, so that a stated share of the dev photos, and of the healthy
camera crops, pass. Numpy only: it runs beside every backend without torch, for well under 1 ms a crop.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

FAMILIARITY_FILE = "familiarity.npz"
FORMAT = "mpox-aism/familiarity@1"

log = logging.getLogger(__name__)


def energy(logits: np.ndarray) -> np.ndarray:
    """``−logsumexp`` of raw logits (higher: less evidence for any class)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))


@dataclass(frozen=True)
class Familiarity:
    """The fitted score: ``unfamiliarity(features, logits)`` and the rule ``familiar(...)``."""

    mean: np.ndarray  # D: feature mean of the fitting photos
    scale: np.ndarray  # D: their standard deviation
    components: np.ndarray  # D×c: the top principal directions of the standardised features
    bank: np.ndarray  # N×c: the fitting photos, projected and normalised (float32; float16 on disk)
    k: int  # which nearest neighbour's distance
    knn_ref: tuple[float, float]  # mean, std of the kNN distance on the dev photos, out of fold
    energy_ref: tuple[float, float]  # mean, std of the energy there
    threshold: float  # scores above it are unfamiliar
    pass_share: float  # the share of dev photos (out of fold) the threshold was set to let through
    model_version: str  # the network whose features it was fitted on

    def _project(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != len(self.mean):
            raise ValueError(f"expected N×{len(self.mean)} features, got {f.shape}")
        z = ((f - self.mean) / self.scale) @ self.components
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def knn_distance(self, features: np.ndarray) -> np.ndarray:
        sim = self._project(features) @ self.bank.T
        k = min(self.k, sim.shape[1])
        return 1.0 - np.partition(sim, -k, axis=1)[:, -k]

    def unfamiliarity(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """N pooled features and their N raw logits → N scores (the larger standardised distance)."""
        d = (self.knn_distance(features) - self.knn_ref[0]) / self.knn_ref[1]
        e = (energy(logits) - self.energy_ref[0]) / self.energy_ref[1]
        return np.maximum(d, e)

    def familiar(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return self.unfamiliarity(features, logits) <= self.threshold

    # ------------------------------------------------------------------------------------ files
    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / FAMILIARITY_FILE
        meta = {"format": FORMAT, "k": self.k, "knn_ref": list(self.knn_ref), "energy_ref": list(self.energy_ref),
                "threshold": self.threshold, "pass_share": self.pass_share, "model_version": self.model_version}
        np.savez_compressed(path, mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32),
                            components=self.components.astype(np.float32), bank=self.bank.astype(np.float16),
                            meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Familiarity:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not a {FORMAT} file ({meta.get('format')!r})")
            return cls(mean=z["mean"], scale=z["scale"], components=z["components"],
                       bank=np.ascontiguousarray(z["bank"], dtype=np.float32),
                       k=int(meta["k"]), knn_ref=tuple(meta["knn_ref"]), energy_ref=tuple(meta["energy_ref"]),
                       threshold=float(meta["threshold"]), pass_share=float(meta["pass_share"]),
                       model_version=str(meta["model_version"]))

    @classmethod
    def beside(cls, model_dir: str | Path, model_version: str) -> Familiarity | None:
        """The score in a model directory, if it was fitted for this network; else None (said once if
        the file is there but was fitted for another network)."""
        path = Path(model_dir) / FAMILIARITY_FILE
        if not path.is_file():
            return None
        score = cls.load(path)
        if score.model_version != model_version:
            log.warning("%s was fitted for model %s, not %s: no familiarity score (refit it with "
                        "`mpox-aism familiarity`)", path, score.model_version, model_version)
            return None
        return score


def fit_bank(features: np.ndarray, *, components: int = 256, k: int = 10) -> Familiarity:
    """The kNN part fitted on N×D features (references and threshold unset: the caller fits them out of fold)."""
    x = np.asarray(features, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    _, _, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
    comp = vt[: min(components, len(vt))].T.astype(np.float32)
    score = Familiarity(mean=mean.astype(np.float32), scale=scale.astype(np.float32), components=comp,
                        bank=np.zeros((0, comp.shape[1]), np.float16), k=k, knn_ref=(0.0, 1.0),
                        energy_ref=(0.0, 1.0), threshold=float("inf"), pass_share=0.0, model_version="")
    # rounded as the file stores it, so a fitted score and its saved copy give the same numbers
    return replace(score, bank=score._project(x).astype(np.float16).astype(np.float32))
