"""A model card written next to every trained model, from what the run actually saw and measured."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from training.data import Sample
from training.labels import LABELS
from training.modeldir import ModelInfo

# Terms as stated by each source (../shared/data/README.md); unknown sources are listed as such.
SOURCE_TERMS = {
    "monkeypox2022": ("Ahsan et al., Monkeypox2022 — collected from the web; no commercial use; "
                      "not for patient diagnosis"),
    "msld_v1": "Ali et al., MSLD v1 — CC BY-NC-SA badge (code MIT); web-scraped",
    "dermnet_nz": "DermNet NZ topic images — CC BY-NC-ND plus DermNet's own terms",
    "dermnet_com": "dermnet.com images — watermarked; no licence stated",
    "roboflow_urticaria": "Roboflow 'urticaria' v9 export — labels unchecked; no licence stated",
    "isic": "ISIC archive — CC0",
}


def write_model_card(out_dir: str | Path, info: ModelInfo, metrics: dict, samples: Sequence[Sample],
                     *, data_root: str) -> Path:
    sources = Counter(s.extra.get("source", "unknown") for s in samples)
    rows = "\n".join(
        f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['specificity']:.3f} | {c['f1']:.3f} "
        f"| {c['support']} |" for name, c in metrics["per_class"].items())
    th = metrics["threshold"]
    text = f"""# Model card: {info.arch} ({info.model_version})

**Research use only, not a diagnostic device.** This model screens photos of skin for signs that
a person should see; it has not been clinically validated and must not be used to diagnose anyone.

## What it is
- Architecture: `{info.arch}`, input {info.image_size}×{info.image_size} RGB, ImageNet mean/std
  (the shared `training.preprocess.preprocess`). Pretrained: {info.recipe.get("pretrained", "?")}.
- Output: probabilities over {", ".join(LABELS)} = softmax(logits / T), T = {info.temperature:.4f}
  (temperature scaling fitted on the validation side).
- Decision rule: a top probability under {info.threshold} is not answered and goes to a person.

## Data
Trained on `{data_root}`: {len(samples)} labeled photos
({", ".join(f"{k} {v}" for k, v in sorted(sources.items()))}), split by `group` (patient / source
topic / near-duplicate), stratified by class: {info.split.get("n_train")} train,
{info.split.get("n_val")} validation. Augmentation on the training side only; a weighted sampler
balances the classes.

| source | terms as stated |
|---|---|
{chr(10).join(f"| {s} | {SOURCE_TERMS.get(s, 'unknown: check before any use')} |" for s in sorted(sources))}

The terms of most sources forbid commercial use; so does this model's use of them.

## Recipe
```
{info.recipe.get("command", "")}
```
Best epoch (by validation macro-F1): {info.recipe.get("best_epoch")}.

## Validation figures (group-held-out side, n = {metrics["n"]})
Accuracy {metrics["accuracy"]:.3f}, macro-F1 {metrics["macro_f1"]:.3f}, ECE {metrics["ece"]:.3f}
(after temperature scaling). At threshold {th["value"]}: coverage {th["coverage"]:.3f}, accuracy on
answered {th["accuracy_answered"]:.3f}.

| class | precision | recall | specificity | F1 | support |
|---|---|---|---|---|---|
{rows}

These figures are measured on the validation side that also chose the best epoch and fitted the
temperature, so they are mildly optimistic; a group-disjoint outside test set is the real measure.

## Known limitations
- Each class comes from few sources (DermNet photos carry a watermark; mpox photos are news and
  case-report crops): the model may partly learn the source rather than the disease. See the
  per-source figures in `metrics.json` (`by_column.source`).
- Skin tones, body sites, lighting and cameras of a real checkpoint are not represented by these
  web photos. Validate on local data before any field trial.
"""
    path = Path(out_dir) / "model_card.md"
    path.write_text(text)
    return path
