"""Preprocessing variants of the shipped linear probe, measured with the shipped recipe's folds and figures.

Issue 11, item 3 ("take the shortcut away"). The recipe, folds, seeds and metrics are exactly those of
the shipped default (``mpox-aism cv --arch mobilenet_v2 --image-size 224 --balance class_source
--negatives runs/healthy_crops/people --loso msid monkeypox2022 msld_v1``): MobileNetV2 frozen
ImageNet features of the photo and its mirror image, a class_source-weighted logistic head whose L2
penalty an inner group k-fold chooses, 5-fold stratified group k-fold (seed 0), three
leave-one-source-out folds, the healthy-people crops as ``normal`` on every training side, the
temperature fitted on the k-fold out-of-fold logits. Only the pixels that reach the backbone change.
The variants were fixed before any of them was measured:

``baseline``
    the shipped recipe reproduced here (k-fold macro-F1 must match ``mpox-aism cv``'s, 0.625).
``mask_train`` / ``mask_both``
    source watermarks removed from the *training* photos only (``mask_train``: the camera never
    produces a watermark, so the held-out side stays as published — the deployment-realistic
    choice) or from both sides (``mask_both``). DermNet NZ's logo / "Te Whatu Ora" block (bottom
    left, fixed pixels: every photo is 384×288) and dermnet.com's "©Dermnet.com" text (centred,
    fixed pixel size) are located from the source's own mean edge map (label-free), turned into a
    pixel mask (edges closed and dilated) and inpainted (OpenCV Telea, radius 3) — a flat
    mean-filled box would be a new per-source mark. Monkeypox2022's stock-photo credit strips
    ("shutterstock.com · …", a near-white band at the bottom) are cropped off. Other sources, the
    healthy crops and the camera never carry a mark, so they are untouched.
``sog6``
    shades-of-grey colour constancy (Finlayson & Trezzi, Minkowski p = 6) on every image, before
    the shared preprocessing: training photos, negatives and healthy crops alike (serving would
    have to do the same; its cost per crop is measured, ``serving_cost``).
``size288`` / ``size320``
    the same whole-image square resize, to 288 / 320 px (MobileNetV2 is fully convolutional and
    global-average pooled, so the same weights apply).

Per variant: ``OUT/<variant>.json`` (k-fold out-of-fold macro-F1 with its 95 % group-bootstrap
interval, per-class F1, mpox recall and precision, per-source accuracy, ECE after temperature;
macro-F1 without msid / monkeypox2022 / msld_v1; fitted on every photo, the share of the healthy
camera crops ``runs/healthy_crops/video`` called mpox), ``OUT/<variant>/<fold>/`` (the ``evaluate``
report of each evaluation) and ``OUT/table.md`` (every variant measured so far). Features are cached
in ``--cache`` (the raw-pixel ones under the very keys ``mpox-aism cv`` uses, so either reuses the
other's). Run ``python -m research.healthy_crops --out runs/healthy_crops`` first.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m research.probe_preprocessing \\
        --variants baseline mask_train mask_both sog6 size288 size320 --out runs/preproc
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.training.calibration import fit_temperature
from mpox_aism.training.cv import Inputs, ProbeRecipe, build_probe_model, fit_network, out_of_fold, run_fold
from mpox_aism.training.data import Sample, scan_dataset
from mpox_aism.training.engine import seed_everything
from mpox_aism.training.evaluate import write_report
from mpox_aism.training.folds import Fold, group_kfold, leave_source_out
from mpox_aism.training.preprocess import preprocess
from mpox_aism.training.probe import PixelTransform, cached_array, cached_features, extract_features, feature_cache_key

LOSO_SOURCES = ("msid", "monkeypox2022", "msld_v1")
THRESHOLD = 0.6
MPOX, NORMAL = LABELS.index("mpox"), LABELS.index("normal")

Transform = PixelTransform


@dataclass(frozen=True)
class Variant:
    """What reaches the backbone: input size, colour constancy, and which side is watermark-masked."""

    name: str
    image_size: int = 224
    colour: str | None = None  # "sog6": shades of grey, p = 6, on every image
    mask: str | None = None  # "train": training photos only; "both": training and held-out photos


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("baseline"),
    Variant("mask_train", mask="train"),
    Variant("mask_both", mask="both"),
    Variant("sog6", colour="sog6"),
    Variant("size288", image_size=288),
    Variant("size320", image_size=320),
)}


# ---------------------------------------------------------------- pixel transforms

def shades_of_grey(image: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Shades-of-grey white balance: divide each channel by its Minkowski p-norm illuminant estimate.

    The gains are normalised to keep the mean illuminant, so brightness stays where it was.
    """
    x = image.astype(np.float32) / 255.0
    illuminant = np.power(np.mean(np.power(x, p), axis=(0, 1)), 1.0 / p)
    gain = illuminant.mean() / np.maximum(illuminant, 1e-6)
    return np.clip(x * gain * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _edges(image: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def _window(a: np.ndarray, shape: tuple[int, int], anchor: str) -> np.ndarray:
    """The ``shape`` window of ``a`` at ``anchor`` ("bottom_left" or "centre"), zero-padded."""
    h, w = shape
    pad = np.pad(a, ((h, h), (w, w)))
    if anchor == "bottom_left":
        top, left = a.shape[0], w
    else:
        top, left = h + a.shape[0] // 2 - h // 2, w + a.shape[1] // 2 - w // 2
    return pad[top:top + h, left:left + w]


def _place(template: np.ndarray, image_shape: tuple[int, int], anchor: str) -> np.ndarray:
    """The inverse of :func:`_window`: the template on an image-sized canvas."""
    h, w = template.shape
    canvas = np.zeros((image_shape[0] + 2 * h, image_shape[1] + 2 * w), np.uint8)
    if anchor == "bottom_left":
        top, left = image_shape[0], w
    else:
        top, left = h + image_shape[0] // 2 - h // 2, w + image_shape[1] // 2 - w // 2
    canvas[top:top + h, left:left + w] = template
    return canvas[h:h + image_shape[0], w:w + image_shape[1]]


def _template(mean_edges: np.ndarray, threshold: float = 20.0, min_area: int = 15) -> np.ndarray:
    """Pixels where the source's mean edge map stands out from its own blur: the fixed mark."""
    high = (mean_edges - cv2.GaussianBlur(mean_edges, (0, 0), 8) > threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(high, connectivity=8)
    keep = np.isin(labels, [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area])
    kernel = np.ones((5, 5), np.uint8)
    closed = cv2.morphologyEx(keep.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    return cv2.dilate(closed, kernel)


@dataclass(frozen=True)
class _Mark:
    source: str
    anchor: str
    window: tuple[int, int]
    second_zone: tuple[slice, slice] | None = None  # a second, rarer mark inside the window


# DermNet NZ: the DermNet disc + "Te Whatu Ora / Health New Zealand" text bottom left (the text is on
# ~1 photo in 5, so it gets its own template from the photos with most edge energy in its zone).
# dermnet.com: "©Dermnet.com", centred, the same pixel size on every photo.
MARKS = (_Mark("dermnet_nz", "bottom_left", (110, 200), (slice(55, 95), slice(60, 170))),
         _Mark("dermnet_com", "centre", (60, 260)))


class WatermarkMasker:
    """Per-source watermark removal (inpainting) and stock-credit strip cropping; see the docstring."""

    def __init__(self, templates: dict[str, tuple[np.ndarray, str]]):
        self.templates = templates

    @classmethod
    def fit(cls, samples: Sequence[Sample]) -> WatermarkMasker:
        """Locate each source's mark from the mean edge map of its photos (no labels used)."""
        templates = {}
        for mark in MARKS:
            edges = [_window(_edges(load_rgb(s.path)), mark.window, mark.anchor)
                     for s in samples if s.source == mark.source]
            if not edges:
                continue
            stack = np.stack(edges)
            t = _template(stack.mean(axis=0))
            if mark.second_zone is not None:
                zone = np.zeros(mark.window, bool)
                zone[mark.second_zone] = True
                score = (stack * (t.astype(bool) & zone)).sum(axis=(1, 2))
                top = stack[score >= np.quantile(score, 0.8)]
                t = np.maximum(t, _template(top.mean(axis=0)))
            templates[mark.source] = (t, mark.anchor)
        return cls(templates)

    def __call__(self, image: np.ndarray, sample: Sample) -> np.ndarray:
        source = sample.source
        if source in self.templates:
            template, anchor = self.templates[source]
            mask = _place(template, image.shape[:2], anchor)
            return cv2.inpaint(np.ascontiguousarray(image), mask, 3, cv2.INPAINT_TELEA)
        if source == "monkeypox2022":
            return crop_credit_strip(image)
        return image

    def changes(self, sample: Sample) -> bool:
        return sample.source in (*self.templates, "monkeypox2022")

    def digest(self) -> str:
        """Names the masks in the feature-cache key, so changed templates never reuse old features."""
        h = hashlib.sha256()
        for source, (template, anchor) in sorted(self.templates.items()):
            h.update(f"{source}|{anchor}|{template.shape}".encode())
            h.update(template.tobytes())
        return h.hexdigest()[:12]


def crop_credit_strip(image: np.ndarray, *, white: int = 225, max_share: float = 0.12) -> np.ndarray:
    """Cut a stock-photo credit strip off the bottom: [white rows][a 3–12-row line of text][≤ 4 white rows].

    Rows are "white" when ≥ 97 % of their pixels are brighter than ``white``, "text" when 40–97 % are;
    the cut (at most ``max_share`` of the height) takes the text and the white rows around it.
    """
    h = image.shape[0]
    share = (image.mean(axis=2) > white).mean(axis=1)
    full, text = share >= 0.97, (share >= 0.4) & (share < 0.97)
    limit = h - int(max_share * h)
    i = h - 1
    while i >= limit and full[i]:
        i -= 1
    if h - 1 - i > 4:
        return image
    below_text = i
    while i >= limit and text[i]:
        i -= 1
    if not 3 <= below_text - i <= 12 or i < limit or not full[i]:
        return image
    while i >= limit and full[i]:
        i -= 1
    return image[:i + 1]


# ---------------------------------------------------------------- features

class FeatureStore:
    """Cached features per (photos, size, pixel transform); records how long each computation took."""

    def __init__(self, cache: Path, timings_file: Path):
        self.cache = cache
        self.timings_file = timings_file
        self.timings: dict[str, float] = (json.loads(timings_file.read_text())
                                          if timings_file.is_file() else {})
        self.models: dict[int, nn.Module] = {}

    def model(self, size: int) -> nn.Module:
        if size not in self.models:
            self.models[size] = build_probe_model(ProbeRecipe(arch="mobilenet_v2", image_size=size))
        return self.models[size]

    def get(self, label: str, samples: Sequence[Sample], size: int,
            transform: tuple[str, Transform] | None = None) -> np.ndarray:
        model = self.model(size)
        if transform is None:  # the keys and arrays of `mpox-aism cv`
            key = "features-" + feature_cache_key(model, samples, image_size=size, flip=True)
            compute = lambda: cached_features(self.cache, model, samples, image_size=size, flip=True,  # noqa: E731
                                              workers=0, desc=f"mobilenet_v2@{size} {label}")
        else:
            name, fn = transform
            key = "features-" + feature_cache_key(model, samples, image_size=size, flip=True, transform=name)
            compute = lambda: cached_array(self.cache, key, lambda: extract_features(  # noqa: E731
                model, samples, image_size=size, workers=0, desc=None, transform=fn))
        cached = (self.cache / f"{key}.npy").is_file()
        t0 = time.perf_counter()
        feats = compute()
        if not cached:
            self.timings[f"{label}@{size}{'+' + transform[0] if transform else ''}"] = round(
                time.perf_counter() - t0, 1)
            self.timings_file.parent.mkdir(parents=True, exist_ok=True)
            self.timings_file.write_text(json.dumps(self.timings, indent=2) + "\n")
        print(f"features {label}@{size} {transform[0] if transform else 'raw'}: {feats.shape} "
              f"({'cached' if cached else f'{time.perf_counter() - t0:.0f} s'})", flush=True)
        return feats


# ---------------------------------------------------------------- evaluation

def _headline(m: dict) -> dict:
    mpox = m["per_class"]["mpox"]
    by_source = m["by_column"].get("source", {})
    return {"n": m["n"], "macro_f1": m["macro_f1"], "macro_f1_ci95": m["ci95"]["macro_f1"],
            "accuracy": m["accuracy"], "ece": m["ece"], "mpox_recall": mpox["recall"],
            "mpox_recall_ci95": m["ci95"]["mpox_recall"], "mpox_precision": mpox["precision"],
            "per_class_f1": {k: c["f1"] for k, c in m["per_class"].items() if c["support"]},
            "per_source_accuracy": {k: {"n": v["n"], "accuracy": v["accuracy"],
                                        "ci95": v["ci95"]["accuracy"]} for k, v in by_source.items()},
            "coverage_at_threshold": m["threshold"]["coverage"]}


def evaluate_variant(variant: Variant, store: FeatureStore, samples: list[Sample], negatives: list[Sample],
                     video: list[Sample], out: Path, command: str, masker: WatermarkMasker | None = None) -> dict:
    """Every figure of one variant; the JSON document written to ``out/<variant>.json``."""
    seed_everything(0)
    recipe = ProbeRecipe(arch="mobilenet_v2", image_size=variant.image_size, balance="class_source")
    size = variant.image_size
    colour = ("sog6", lambda im, _s: shades_of_grey(im, 6.0)) if variant.colour == "sog6" else None
    t0 = time.perf_counter()
    raw = store.get("dev", samples, size, colour)
    neg = store.get("negatives", negatives, size, colour)
    vid = store.get("video", video, size, colour)
    train_dev, test_dev = raw, raw
    masked_n = 0
    if variant.mask:
        if masker is None:
            raise ValueError(f"{variant.name} needs a WatermarkMasker")
        changed = [i for i, s in enumerate(samples) if masker.changes(s)]
        masked_n = len(changed)
        part = store.get("dev_marked_sources", [samples[i] for i in changed], size,
                         (f"watermark-mask-{masker.digest()}", masker))
        train_dev = raw.copy()
        train_dev[changed] = part
        test_dev = train_dev if variant.mask == "both" else raw
    features_s = time.perf_counter() - t0

    # Pool: [training-side photos | negatives | held-out-side photos]. Folds train on the first two
    # parts and test on the third, so the two sides can see different pixels (mask_train).
    dev, nneg = len(samples), len(negatives)
    pool = samples + negatives + samples
    inputs = Inputs(model=nn.Identity(), feats=np.concatenate([train_dev, neg, test_dev]))
    extra_train = np.arange(dev, dev + nneg)
    off = dev + nneg

    def pooled(f: Fold) -> Fold:
        return Fold(name=f.name, train=np.concatenate([f.train, extra_train]).astype(int), test=f.test + off)

    y = np.array([s.label for s in samples])
    t1 = time.perf_counter()
    folds = [pooled(f) for f in group_kfold(samples, recipe.folds, seed=recipe.seed)]
    oof_pool, results = out_of_fold(inputs, pool, folds, recipe, n=len(pool))
    oof = oof_pool[off:]
    temperature = fit_temperature(oof, y)
    vdir = out / variant.name
    extra = {"variant": asdict(variant), "recipe": asdict(recipe)}
    kfold = _headline(write_report(vdir / "kfold", samples, oof, temperature=temperature, threshold=THRESHOLD,
                                   title=f"{variant.name}: out-of-fold (5-fold by group)", extra=extra))
    loso = {}
    for src in LOSO_SOURCES:
        fold = pooled(leave_source_out(samples, src))
        logits, res = run_fold(inputs, pool, fold, recipe)
        results.append(res)
        sub = [samples[i - off] for i in fold.test]
        m = write_report(vdir / fold.name, sub, logits, temperature=temperature, threshold=THRESHOLD,
                         title=f"{variant.name}: {fold.name}", extra=extra)
        loso[src] = {"n": m["n"], "macro_f1": m["macro_f1"], "macro_f1_ci95": m["ci95"]["macro_f1"],
                     "mpox_recall": m["per_class"]["mpox"]["recall"], "accuracy": m["accuracy"]}
        print(f"{fold.name}: macro_f1={m['macro_f1']:.3f} mpox_recall={loso[src]['mpox_recall']:.3f}", flush=True)

    # Fitted on every photo (+ negatives), as `cv --ship` does; scored on the clips' healthy crops.
    head = fit_network(inputs, pool, np.arange(off), recipe)
    probs = softmax(head.logits(vid[:, :1]), temperature)
    called = probs.argmax(axis=1) == MPOX
    healthy = {"n": len(video), "called_mpox": int(called.sum()), "called_mpox_share": float(called.mean()),
               "called_mpox_p06": int((called & (probs.max(axis=1) >= THRESHOLD)).sum()),
               "called_normal_share": float((probs.argmax(axis=1) == NORMAL).mean()), "l2": head.l2}
    fits_s = time.perf_counter() - t1
    doc = {"variant": asdict(variant), "command": command, "recipe": asdict(recipe),
           "n": dev, "negatives": nneg, "masked_photos": masked_n, "temperature": temperature,
           "kfold": kfold, "loso": loso, "healthy_video": healthy,
           "folds": [asdict(r) for r in results],
           "wall_s": {"features_this_run": round(features_s, 1), "fits_and_reports": round(fits_s, 1)}}
    (out / f"{variant.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    ci = kfold["macro_f1_ci95"]
    print(f"{variant.name}: k-fold macro_f1={kfold['macro_f1']:.3f} ({ci['low']:.3f}–{ci['high']:.3f}) "
          f"mpox recall={kfold['mpox_recall']:.3f} precision={kfold['mpox_precision']:.3f} "
          f"ece={kfold['ece']:.3f} T={temperature:.3f}; LOSO "
          + " ".join(f"{k}={v['macro_f1']:.3f}" for k, v in loso.items())
          + f"; healthy called mpox {healthy['called_mpox']}/{healthy['n']}", flush=True)
    return doc


# ---------------------------------------------------------------- serving cost

def serving_cost(video: list[Sample], repeats: int = 20) -> dict:
    """Median ms, one thread, of what each variant adds at serving time (torch CPU, batch 1)."""
    crops = [load_rgb(s.path) for s in video[:60]]

    def median_ms(fn: Callable[[], object], n: int) -> float:
        fn()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return round(float(np.median(times)) * 1e3, 3)

    doc: dict[str, object] = {
        "crops": len(crops), "crop_median_hw": [int(np.median([c.shape[i] for c in crops])) for i in (0, 1)],
        "shades_of_grey_ms_per_crop": round(median_ms(lambda: [shades_of_grey(c) for c in crops], 5)
                                            / len(crops), 3),
        "preprocess_224_ms_per_crop": round(median_ms(lambda: [preprocess(c, 224) for c in crops], 5)
                                            / len(crops), 3)}
    for size in (224, 288, 320):
        model = build_probe_model(ProbeRecipe(arch="mobilenet_v2", image_size=size))
        x = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            doc[f"mobilenet_v2_forward_ms_{size}"] = median_ms(lambda m=model, x=x: m(x), repeats)
    return doc


# ---------------------------------------------------------------- table

def _f(v: float) -> str:
    return f"{v:.3f}"


def write_table(out: Path) -> Path:
    docs = [json.loads((out / f"{name}.json").read_text()) for name in VARIANTS if (out / f"{name}.json").is_file()]
    sources = sorted({s for d in docs for s in d["kfold"]["per_source_accuracy"]})
    lines = ["# Preprocessing variants of the shipped probe (MobileNetV2, class_source, people negatives)", "",
             "Same recipe, folds (5-fold group k-fold, seed 0; leave-one-source-out), seeds and metrics as "
             "`mpox-aism cv`; temperature fitted on the k-fold out-of-fold logits. "
             "Healthy: the clips' 151 healthy camera crops, head fitted on every photo.", "",
             "| variant | k-fold macro-F1 (95 % CI) | accuracy | mpox recall | mpox precision | ECE | "
             "without msid | without monkeypox2022 | without msld_v1 | mean LOSO | healthy called mpox "
             "| … with p ≥ 0.6 | called normal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in docs:
        k, h = d["kfold"], d["healthy_video"]
        ci = k["macro_f1_ci95"]
        loso = [d["loso"][s]["macro_f1"] for s in LOSO_SOURCES]
        lines.append(f"| {d['variant']['name']} | {_f(k['macro_f1'])} ({ci['low']:.3f}–{ci['high']:.3f}) | "
                     f"{_f(k['accuracy'])} | {_f(k['mpox_recall'])} | {_f(k['mpox_precision'])} | {_f(k['ece'])} | "
                     + " | ".join(_f(v) for v in loso) + f" | {_f(float(np.mean(loso)))} | "
                     f"{h['called_mpox']}/{h['n']} ({100 * h['called_mpox_share']:.1f} %) | "
                     f"{h['called_mpox_p06']} | {100 * h['called_normal_share']:.1f} % |")
    lines += ["", "Per-class F1 (k-fold, out of fold):", "",
              "| variant | " + " | ".join(LABELS) + " |", "|---|" + "---|" * len(LABELS)]
    for d in docs:
        f1 = d["kfold"]["per_class_f1"]
        lines.append(f"| {d['variant']['name']} | " + " | ".join(_f(f1[c]) if c in f1 else "—" for c in LABELS) + " |")
    lines += ["", "Accuracy per source (k-fold, out of fold):", "",
              "| variant | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for d in docs:
        acc = d["kfold"]["per_source_accuracy"]
        lines.append(f"| {d['variant']['name']} | "
                     + " | ".join(_f(acc[s]["accuracy"]) if s in acc else "—" for s in sources) + " |")
    timings = out / "timings.json"
    if timings.is_file():
        lines += ["", "Feature extraction wall time (s, photo + mirror, 1 thread, nice 19, CPU shared):", ""]
        lines += [f"- {k}: {v}" for k, v in json.loads(timings.read_text()).items()]
    cost = out / "serving_cost.json"
    if cost.is_file():
        lines += ["", "Serving cost (median, 1 thread, torch CPU, batch 1): "
                  + ", ".join(f"{k} {v}" for k, v in json.loads(cost.read_text()).items())]
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--data", default="../shared/data/skin8")
    p.add_argument("--healthy", default="runs/healthy_crops", help="research/healthy_crops.py output")
    p.add_argument("--cache", default="runs/cv/cache", help="feature cache (shared with mpox-aism cv)")
    p.add_argument("--out", default="runs/preproc")
    p.add_argument("--no-serving-cost", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m research.probe_preprocessing " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    healthy = Path(args.healthy)
    for part in ("people", "video"):
        if not (healthy / part / "manifest.csv").is_file():
            raise SystemExit(f"{healthy / part}/manifest.csv missing: run research/healthy_crops.py --out {healthy}")
    samples = scan_dataset(args.data, require_all_classes=True)
    negatives = scan_dataset(healthy / "people")
    video = scan_dataset(healthy / "video")
    store = FeatureStore(Path(args.cache), out / "timings.json")
    if not args.no_serving_cost:
        (out / "serving_cost.json").write_text(json.dumps(serving_cost(video), indent=2) + "\n")
    masker = WatermarkMasker.fit(samples) if any(VARIANTS[v].mask for v in args.variants) else None
    for name in args.variants:
        evaluate_variant(VARIANTS[name], store, samples, negatives, video, out, command, masker)
        print(f"table → {write_table(out)}", flush=True)


if __name__ == "__main__":
    main()
