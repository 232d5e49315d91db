"""Per-class precision / recall / specificity / F1, the 0.6-threshold view, calibration error.

Plain numpy so the same numbers come out of training, evaluation and benchmarks. A class with no
support or no predictions gets 0.0 for the undefined ratio (sklearn's ``zero_division=0``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mpox_aism.contracts.decision import DEFAULT_THRESHOLD
from mpox_aism.contracts.labels import LABELS


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int = len(LABELS)) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return cm


@dataclass(frozen=True)
class ClassFigures:
    """One class's figures (the paper's four, and how many photos of the class there were)."""

    precision: float
    recall: float
    specificity: float
    f1: float
    support: int


@dataclass(frozen=True)
class AnsweredFigures:
    """One class's figures over the photos the model answered (top probability ≥ the threshold)."""

    precision: float
    recall: float


@dataclass(frozen=True)
class ThresholdFigures:
    """The 0.6 rule's view: how many photos are answered, and how well; the rest go to a person."""

    value: float
    coverage: float
    accuracy_answered: float
    per_class: dict[str, AnsweredFigures]


@dataclass(frozen=True)
class Metrics:
    """Every figure of one set of predictions; :meth:`to_json` is the head of ``metrics.json`` (README)."""

    labels: list[str]
    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassFigures]
    confusion_matrix: list[list[int]]
    threshold: ThresholdFigures
    ece: float

    def to_json(self) -> dict:
        return asdict(self)


def per_class(cm: np.ndarray, labels: Sequence[str] = LABELS) -> dict[str, ClassFigures]:
    total = cm.sum()
    out = {}
    for i, name in enumerate(labels):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        tn = total - tp - fp - fn
        p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        out[name] = ClassFigures(precision=p, recall=r, specificity=_ratio(tn, tn + fp), f1=_ratio(2 * p * r, p + r),
                                 support=int(cm[i, :].sum()))
    return out


def macro_f1(cm: np.ndarray, labels: Sequence[str] = LABELS) -> float:
    """Mean F1 over the classes present in the ground truth (absent classes would add a 0)."""
    present = [v.f1 for v in per_class(cm, labels).values() if v.support > 0]
    return float(np.mean(present)) if present else 0.0


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        out.append({"lo": float(lo), "hi": float(hi), "n": int(m.sum()),
                    "confidence": float(conf[m].mean()) if m.any() else 0.0,
                    "accuracy": float(correct[m].mean()) if m.any() else 0.0})
    return out


def threshold_view(probs: np.ndarray, y_true: np.ndarray, threshold: float,
                   labels: Sequence[str] = LABELS) -> ThresholdFigures:
    """Figures over the images the model answers (top probability ≥ threshold); the rest go to a person."""
    answered = probs.max(axis=1) >= threshold
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true[answered], y_pred[answered], len(labels))
    return ThresholdFigures(
        value=float(threshold), coverage=float(answered.mean()) if len(answered) else 0.0,
        accuracy_answered=_ratio((y_pred[answered] == y_true[answered]).sum(), answered.sum()),
        per_class={k: AnsweredFigures(v.precision, v.recall) for k, v in per_class(cm, labels).items()})


def threshold_sweep(probs: np.ndarray, y_true: np.ndarray,
                    thresholds: Sequence[float] | None = None) -> list[dict[str, float]]:
    """Coverage vs accuracy over thresholds, so the 0.6 choice can be justified on data."""
    if thresholds is None:
        thresholds = [round(t, 2) for t in np.arange(0.0, 0.96, 0.05)]
    y_pred = probs.argmax(axis=1)
    rows = []
    for t in thresholds:
        answered = probs.max(axis=1) >= t
        cm = confusion_matrix(y_true[answered], y_pred[answered])
        mpox = per_class(cm)["mpox"]
        # mpox cases the screen does not miss: answered-and-right, or held for a person.
        mpox_mask = y_true == 0
        caught = (~answered[mpox_mask]) | (y_pred[mpox_mask] == 0)
        rows.append({
            "threshold": float(t),
            "coverage": float(answered.mean()),
            "accuracy_answered": _ratio((y_pred[answered] == y_true[answered]).sum(), answered.sum()),
            "macro_f1_answered": macro_f1(cm),
            "mpox_recall_answered": mpox.recall,
            "mpox_caught_or_reviewed": float(caught.mean()) if mpox_mask.any() else 0.0,
        })
    return rows


def compute_metrics(probs: np.ndarray, y_true: np.ndarray, *,
                    threshold: float = DEFAULT_THRESHOLD, labels: Sequence[str] = LABELS) -> Metrics:
    """Overall, per class, at the threshold, ECE (the head of the metrics.json document, see README)."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=int)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    return Metrics(labels=list(labels), n=len(y_true), accuracy=_ratio((y_pred == y_true).sum(), len(y_true)),
                   macro_f1=macro_f1(cm, labels), per_class=per_class(cm, labels), confusion_matrix=cm.tolist(),
                   threshold=threshold_view(probs, y_true, threshold, labels),
                   ece=expected_calibration_error(probs, y_true))


def bootstrap_figures(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[float, float, float]:
    """(macro-F1, accuracy, class ``k``'s recall — NaN without support) of one draw."""
    cm = confusion_matrix(y, pred)
    recall = float(cm[k, k] / cm[k].sum()) if cm[k].sum() else float("nan")
    return macro_f1(cm), float(np.trace(cm) / max(1, cm.sum())), recall


def group_bootstrap(probs: np.ndarray, y_true: np.ndarray, groups: Sequence[str], *, n: int = 1000,
                    seed: int = 0, focus: str = "mpox") -> dict[str, dict[str, float]]:
    """95 % intervals of accuracy, macro-F1 and the ``focus`` class's recall, resampling whole groups.

    Photos of one patient or topic are not independent, so groups (not photos) are drawn with
    replacement; with ~20 mpox validation photos from a handful of groups the interval is wide, and
    the point figure alone would overstate what a validation side this small can show.
    """
    y_true = np.asarray(y_true, dtype=int)
    pred = np.asarray(probs).argmax(axis=1)
    names = np.asarray(list(groups))
    uniq = np.unique(names)
    members = [np.flatnonzero(names == g) for g in uniq]
    k = LABELS.index(focus)
    rng = np.random.default_rng(seed)
    acc, f1, rec = [], [], []
    for _ in range(n):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        f, a, r = bootstrap_figures(y_true[idx], pred[idx], k)
        acc.append(a)
        f1.append(f)
        if not np.isnan(r):
            rec.append(r)

    def interval(v: list[float]) -> dict[str, float]:
        lo, hi = np.percentile(v, [2.5, 97.5]) if v else (float("nan"), float("nan"))
        return {"low": round(float(lo), 4), "high": round(float(hi), 4)}

    return {"accuracy": interval(acc), "macro_f1": interval(f1), f"{focus}_recall": interval(rec),
            "resamples": {"n": n, "unit": "group", "groups": len(uniq), "seed": seed}}


@dataclass(frozen=True)
class HealthyCheck:
    """False alerts on crops of healthy people: what a checkpoint meets most and F1 does not show.

    ``mpox_alerts`` are the crops called mpox with a probability at or above the threshold — the ones
    the decider would flag as suspected rather than send to review.
    """

    n: int
    called_mpox: int
    mpox_alerts: int
    called_normal: int
    threshold: float

    @classmethod
    def from_probs(cls, probs: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                   labels: Sequence[str] = LABELS) -> HealthyCheck:
        pred = np.asarray(probs).argmax(axis=1)
        mpox = pred == labels.index("mpox")
        return cls(n=len(pred), called_mpox=int(mpox.sum()),
                   mpox_alerts=int((mpox & (np.asarray(probs).max(axis=1) >= threshold)).sum()),
                   called_normal=int((pred == labels.index("normal")).sum()), threshold=threshold)

    def summary(self) -> str:
        pct = 100.0 / max(1, self.n)
        return (f"{self.called_mpox}/{self.n} called mpox ({self.called_mpox * pct:.1f} %), "
                f"{self.mpox_alerts} of them with p ≥ {self.threshold:g}; "
                f"{self.called_normal} called normal ({self.called_normal * pct:.1f} %)")


@dataclass(frozen=True)
class Headline:
    """One report's figures as ``cv.json``, ``cv.md`` and the model card show them."""

    n: int
    accuracy: float
    macro_f1: float
    ece: float
    ci95: dict  # group_bootstrap's intervals (accuracy, macro_f1, mpox_recall, resamples)
    mpox_recall: float
    mpox_precision: float
    per_class_f1: dict[str, float]
    per_source_accuracy: dict[str, float]
    coverage_at_threshold: float

    @classmethod
    def of(cls, report: dict) -> Headline:
        """From the ``metrics.json`` document that ``evaluate.write_report`` wrote (the file format, README)."""
        mpox = report["per_class"]["mpox"]
        return cls(n=report["n"], accuracy=report["accuracy"], macro_f1=report["macro_f1"], ece=report["ece"],
                   ci95=report["ci95"], mpox_recall=mpox["recall"], mpox_precision=mpox["precision"],
                   per_class_f1={k: c["f1"] for k, c in report["per_class"].items() if c["support"]},
                   per_source_accuracy={k: v["accuracy"]
                                        for k, v in report["by_column"].get("source", {}).items()},
                   coverage_at_threshold=report["threshold"]["coverage"])
