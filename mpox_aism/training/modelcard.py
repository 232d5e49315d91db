"""A model card written next to every trained model, from what the run actually saw and measured.

It says plainly which classes are not to be trusted (a rule, below, not a judgement made per
model), and where the figures come from: a group-held-out validation side (``train``) or
out-of-fold predictions over every dev photo (``cv``), with leave-one-source-out figures beside.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.fused import fused_parts
from mpox_aism.model.modeldir import ModelInfo
from mpox_aism.training.data import Sample
from mpox_aism.training.metrics import Headline, HealthyCheck

# Terms as stated by each source (../shared/data/README.md); unknown sources are listed as such.
SOURCE_TERMS = {
    "monkeypox2022": ("Ahsan et al., Monkeypox2022 — collected from the web; no commercial use; "
                      "not for patient diagnosis"),
    "msld_v1": "Ali et al., MSLD v1 — CC BY-NC-SA badge (code MIT); web-scraped",
    "dermnet_nz": "DermNet NZ topic images — CC BY-NC-ND plus DermNet's own terms",
    "dermnet_com": "dermnet.com images — watermarked; no licence stated",
    "roboflow_urticaria": "Roboflow 'urticaria' v9 export — labels unchecked; no licence stated",
    "msid": "Monkeypox Skin Images Dataset (MSID), public repository copy — no licence file; "
            "non-commercial research use",
    "isic": "ISIC archive — CC0",
    "people": ("face_recognition's example photos (MIT-licensed repository) and COCO val2014 photos "
               "(Flickr, each under its own Creative Commons licence)"),
}
# A class is "not to be trusted" when its F1 is under this, or its photos come from fewer than
# MIN_GROUPS groups or from a single source (then the figure says little about a new site).
UNTRUSTED_F1 = 0.70
MIN_GROUPS = 10
# the ``source`` of close-up patches among the negatives (research/closeups.py writes them), counted apart
CLOSEUP = "closeup"


def untrusted_classes(metrics: dict, samples: Sequence[Sample]) -> dict[str, str]:
    """label → the plain reason it should not be relied on."""
    groups: dict[str, set[str]] = defaultdict(set)
    sources: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        groups[s.label_name].add(s.group)
        sources[s.label_name].add(s.source)
    out = {}
    for name in LABELS:
        c = metrics["per_class"].get(name)
        why = []
        if c and c["support"] and c["f1"] < UNTRUSTED_F1:
            why.append(f"F1 {c['f1']:.2f}")
        if len(groups[name]) < MIN_GROUPS:
            why.append(f"only {len(groups[name])} patient/topic group(s)")
        if len(sources[name]) == 1:
            why.append(f"a single source ({next(iter(sources[name]))})")
        if why:
            out[name] = ", ".join(why)
    return out


def _interval(ci: Mapping, key: str) -> str:
    v = ci.get(key)
    return f" (95 % CI {v['low']:.3f}–{v['high']:.3f})" if v else ""


def _per_source(metrics: dict) -> str:
    rows = metrics.get("by_column", {}).get("source", {})
    lines = ["| source | n | accuracy (95 % CI) | macro-F1 over the classes it has (95 % CI) |", "|---|---|---|---|"]
    for k, m in rows.items():
        ci = m.get("ci95", {})
        lines.append(f"| {k} | {m['n']} | {m['accuracy']:.3f}{_span(ci, 'accuracy')} | "
                     f"{m['macro_f1']:.3f}{_span(ci, 'macro_f1')} |")
    return "\n".join(lines)


def _span(ci: Mapping, key: str) -> str:
    v = ci.get(key)
    return f" ({v['low']:.3f}–{v['high']:.3f})" if v else ""


def _loso(reports: Mapping[str, Headline]) -> str:
    if not reports:
        return ""
    lines = ["", "### Leave one source out (train without it, test on all of it)",
             "The project's proxy for a site it has never seen.", "",
             "| held-out source | n | accuracy | macro-F1 (95 % CI) | mpox recall | mpox precision | ECE |",
             "|---|---|---|---|---|---|---|"]
    for name, h in reports.items():
        ci = h.ci95["macro_f1"]
        lines.append(f"| {name.removeprefix('without_')} | {h.n} | {h.accuracy:.3f} | {h.macro_f1:.3f} "
                     f"({ci['low']:.3f}–{ci['high']:.3f}) | {h.mpox_recall:.3f} | {h.mpox_precision:.3f} "
                     f"| {h.ece:.3f} |")
    lines += ["", "At a source it has never seen its probabilities are less honest (ECE above, against the "
              "out-of-fold figure): there the 0.6 threshold sends fewer of its mistakes to review."]
    return "\n".join(lines)


def _healthy(check: HealthyCheck | None, by_fold: Sequence[HealthyCheck] = ()) -> str:
    if check is None:
        return ""
    folds = ""
    if by_fold:
        folds = (f" Each of the recipe's {len(by_fold)} fold heads (each trained without one fold) on the same "
                 f"crops: called mpox {', '.join(str(c.called_mpox) for c in by_fold)}; with p ≥ "
                 f"{by_fold[0].threshold:g}: {', '.join(str(c.mpox_alerts) for c in by_fold)}. One head's "
                 "count varies this much, so the shipped head's figure is one draw.")
    return ("\n### Healthy people through the camera pipeline (false alerts)\n"
            f"The shipped model on {check.n} crops that the kiosk's own detector and crop stage made of "
            "healthy people in `../shared/data/video` (never trained on): "
            f"{check.summary()}.{folds} Few scenes and few people: a site should repeat this with its own "
            "footage.\n")


def _fused_note(arch: str) -> str:
    parts = fused_parts(arch)
    if not parts:
        return ""
    return (f" ({' and '.join(parts)} side by side on the same input, their last feature maps "
            "concatenated, one linear head: `mpox_aism/model/fused.py`)")


def write_model_card(out_dir: str | Path, info: ModelInfo, metrics: dict, samples: Sequence[Sample],
                     *, data_root: str, loso: Mapping[str, Headline] | None = None,
                     negatives: Sequence[Sample] = (), derived: Sequence[Sample] = (),
                     reproduce_commands: Sequence[str] = (),
                     healthy: HealthyCheck | None = None,
                     healthy_by_fold: Sequence[HealthyCheck] = ()) -> Path:
    sources = Counter(s.source for s in samples)
    out_of_fold = not info.val_groups
    rows = "\n".join(
        f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['specificity']:.3f} | {c['f1']:.3f} "
        f"| {c['support']} |" for name, c in metrics["per_class"].items())
    th = metrics["threshold"]
    ci = metrics.get("ci95", {})
    bad = untrusted_classes(metrics, samples)
    bad_lines = "\n".join(f"- **{k}**: {v}." for k, v in bad.items()) or "- none by this rule."
    if out_of_fold:
        temp_from = "out-of-fold predictions of the cross-validation"
        cal = metrics.get("shipped_calibration") or {}
        if cal.get("ece_out_of_fold") is not None:
            temp_from = (f"out-of-fold predictions of the fold heads refitted at this head's L2 penalty "
                         f"{cal['l2']:g}, where its ECE is {cal['ece_out_of_fold']:.3f}; the figures below "
                         f"are the recipe's, each fold choosing its own penalty, at T = "
                         f"{cal['recipe_temperature']:.4f}")
        split_text = ("Every photo trains the shipped model; none is held out. The figures below are "
                      f"out-of-fold ({info.recipe.get('args', {}).get('folds', '?')}-fold by group).")
        if negatives:
            patches = sum(s.source == CLOSEUP for s in negatives)
            also = f", and {patches} close-up patches cut from them" if patches else ""
            split_text += (f" Also on every training side, never tested: {len(negatives) - patches} crops of "
                           f"healthy people made by the camera pipeline itself from `../shared/data/people`{also} "
                           f"(label `normal`; the dermatology sources hold no camera-like healthy hands). "
                           f"Terms: {SOURCE_TERMS['people']}.")
        if derived:
            labels = ", ".join(sorted({f"`{d.label_name}`" for d in derived}))
            split_text += (f" And {len(derived)} views cut from the dev photos themselves (close-up patches "
                           f"of skin; label {labels}), each on a training side exactly when its photo is, "
                           f"never tested.")
        figures_title = f"Out-of-fold figures (every dev photo tested once, n = {metrics['n']})"
        caveat = ("The temperature was fitted on these same out-of-fold predictions, and the recipe was chosen "
                  "among a few on them (docs/RESULTS.md), so they are mildly optimistic.")
        recipe_note = f"Kind: {info.recipe.get('kind', '')}; L2 penalty {info.recipe.get('l2')} (inner group k-fold)."
    else:
        temp_from = "the validation side"
        split_text = (f"Split by `group` (patient / source topic / near-duplicate), stratified by class: "
                      f"{info.split.get('n_train')} train, {info.split.get('n_val')} validation.")
        figures_title = f"Validation figures (group-held-out side, n = {metrics['n']})"
        caveat = ("These figures are measured on the validation side that also chose the best epoch and "
                  "fitted the temperature, so they are mildly optimistic.")
        recipe_note = f"Best epoch (by validation macro-F1): {info.recipe.get('best_epoch')}."
    reproduce = ""
    if reproduce_commands:
        reproduce = ("\n\nTo reproduce (README, \"The shipped default model\"):\n```\n"
                     + "\n".join(reproduce_commands) + "\n```")
    text = f"""# Model card: {info.arch} ({info.model_version})

**Research use only, not a diagnostic device.** This model screens photos of skin for signs that
a person should see; it has not been clinically validated and must not be used to diagnose anyone.

## What it is
- Architecture: `{info.arch}`{_fused_note(info.arch)}, input {info.image_size}×{info.image_size} RGB, ImageNet mean/std
  (the shared `mpox_aism.training.preprocess.preprocess`). Pretrained: {info.recipe.get("pretrained", "?")}.
- Output: probabilities over {", ".join(LABELS)} = softmax(logits / T), T = {info.temperature:.4f}
  (temperature scaling fitted on {temp_from}).
- Decision rule: a top probability under {info.threshold} is not answered and goes to a person.

## Classes not to be trusted
Rule: F1 under {UNTRUSTED_F1}, fewer than {MIN_GROUPS} patient/topic groups, or a single source.
{bad_lines}

A `normal` or `eczema` answer is not a clearance: a person reviews every flagged traveller.

## Data
Trained on `{data_root}`: {len(samples)} labeled photos
({", ".join(f"{k} {v}" for k, v in sorted(sources.items()))}). {split_text}

| source | terms as stated |
|---|---|
{chr(10).join(f"| {s} | {SOURCE_TERMS.get(s, 'unknown: check before any use')} |" for s in sorted(sources))}

The terms of most sources forbid commercial use; so does this model's use of them.

## Recipe
```
{info.recipe.get("command", "")}
```
{recipe_note}{reproduce}

## {figures_title}
Accuracy {metrics["accuracy"]:.3f}{_interval(ci, "accuracy")},
macro-F1 {metrics["macro_f1"]:.3f}{_interval(ci, "macro_f1")},
mpox recall {metrics["per_class"]["mpox"]["recall"]:.3f}{_interval(ci, "mpox_recall")}, ECE {metrics["ece"]:.3f}
(after temperature scaling). Intervals: bootstrap over groups. At threshold {th["value"]}: coverage
{th["coverage"]:.3f}, accuracy on answered {th["accuracy_answered"]:.3f}.

| class | precision | recall | specificity | F1 | support |
|---|---|---|---|---|---|
{rows}

### Per source
{_per_source(metrics)}
{_loso(loso or {})}
{_healthy(healthy, healthy_by_fold)}

{caveat} A group-disjoint outside test set is the real measure.

## Known limitations
- Each class comes from few sources (DermNet photos carry a watermark; mpox photos are news and
  case-report crops; MSID's normal photos are largely stock photos): the model may partly learn the
  source rather than the disease — compare the per-source and leave-one-source-out figures.
- Skin tones, body sites, lighting and cameras of a real checkpoint are not represented by these
  web photos. Validate on local data before any field trial.
"""
    path = Path(out_dir) / "model_card.md"
    path.write_text(text)
    return path
