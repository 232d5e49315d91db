"""``mpox-aism adapt``: a site head beside the dev photos — its weights, its anchor, the whole command, bad input."""

from __future__ import annotations

import csv
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from mpox_aism.contracts.labels import LABELS
from mpox_aism.training.adapt import AdaptError, get_args_parser, main
from mpox_aism.training.probe import fit_head
from tests.conftest import SKIN8, default_model_or_skip


def test_an_anchored_head_stays_near_its_base() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 1, 6))
    y = np.arange(80) % 8
    base = rng.normal(size=(8, 6))
    w = np.ones(80)
    groups = [str(i) for i in range(80)]
    anchored = fit_head(x, y, weights=w, groups=groups, l2_grid=(1e4,), prior_raw=base)
    free = fit_head(x, y, weights=w, groups=groups, l2_grid=(1e4,))
    assert np.abs(anchored.raw()[0] - base).max() < 0.05 * np.abs(base).max()
    assert np.abs(free.raw()[0]).max() < 0.05 * np.abs(base).max()  # the usual penalty pulls to zero


def _reviews(root: Path, dev: Path, *, source: str = "gate-7", per_class: int = 4,
             classes: tuple[str, ...] = ("mpox", "normal")) -> Path:
    """A `reviews export`-shaped folder of real photos the dev subset does not hold (symlinks)."""
    used = {p.resolve() for p in dev.rglob("*.jpg")}
    rows = []
    for label in classes:
        photos = [p for p in sorted((SKIN8 / label).glob("*.jpg")) if p.resolve() not in used][-per_class:]
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(photos):
            (root / label / p.name).symlink_to(p)
            rows.append({"path": f"{label}/{p.name}", "label": label, "source": source,
                         "group": f"{source}:cam:run:{label}{i // 2}"})
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "source", "group"])
        w.writeheader()
        w.writerows(rows)
    return root


def _args(**kw) -> Namespace:
    base = vars(get_args_parser().parse_args(["--reviews", "r", "--data", "d", "--out", "o"]))
    return Namespace(**(base | kw))


def test_adapt_writes_a_checked_site_model_every_backend_loads(tiny_skin8: Path, tmp_path: Path) -> None:
    model = default_model_or_skip()
    reviews = _reviews(tmp_path / "reviews", tiny_skin8)
    out = tmp_path / "site"
    report = main(_args(reviews=str(reviews), data=str(tiny_skin8), model=str(model), out=str(out),
                        cache=str(tmp_path / "cache"), parity_images=4))
    base_version = json.loads((model / "metrics.json").read_text())["model_version"]
    assert report.base_model_version == base_version and report.n_site_labels == 8
    assert report.site_counts == {"mpox": 4, "normal": 4}
    assert {c.label for c in report.dev_classes} == set(LABELS)
    for name in ("model.pt", "model.onnx", "model.onnx.parity.json", "metrics.json", "model_card.md",
                 "familiarity.npz", "labels.json", "calibration.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "model.onnx.parity.json").read_text())["max_abs_diff"] <= 1e-3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_version"] == report.model_version != base_version
    assert metrics["site"]["passed"] == report.passed and metrics["site"]["n_site_labels"] == 8
    card = (out / "model_card.md").read_text()
    assert base_version in card and "8 reviewed labels" in card and "Research use only" in card

    from mpox_aism.contracts.images import load_rgb
    from mpox_aism.inference.backends import load_classifier
    from mpox_aism.kiosk.web.diagnosis import DiagnosisService

    photo = next((reviews / "mpox").iterdir())
    for backend in ("onnxruntime", "torch"):
        with load_classifier(backend, out) as clf:
            assert clf.meta.model_version == report.model_version and clf.familiarity is not None
            got = clf.classify([load_rgb(photo)])
            assert got.probabilities.shape == (1, len(LABELS)) and got.unfamiliarity is not None
    # the box takes it as a shadow head when it passed its checks, and refuses it, saying why, when not
    from mpox_aism.kiosk.models import ModelError, ModelStore

    store = ModelStore(tmp_path / "state")
    if report.passed:
        store.install(out, by="admin.test", fallback=model)
        assert store.slots().shadow == report.model_version
    else:
        with pytest.raises(ModelError, match="failed its own checks"):
            store.install(out, by="admin.test", fallback=model)

    from mpox_aism.training import evaluate

    ev = evaluate.main(evaluate.get_args_parser().parse_args(["--data", str(reviews), "--model", str(out),
                                                             "--out", str(tmp_path / "eval")]))
    assert ev["model_version"] == report.model_version and ev["n"] == 8 and "unfamiliar_rate" in ev
    with load_classifier("onnxruntime", out) as clf:
        answer = DiagnosisService(clf, None, threshold=0.6, notifiable=("mpox",), max_pixels=40_000_000).analyse(
            photo.read_bytes())
        assert answer.model_version == report.model_version


def test_bad_input_is_refused_before_anything_is_written(tiny_skin8: Path, tmp_path: Path) -> None:
    model = default_model_or_skip()

    def run(reviews: Path, out: Path | None = None) -> None:
        main(_args(reviews=str(reviews), data=str(tiny_skin8), model=str(model),
                   out=str(out or tmp_path / "never"), cache=str(tmp_path / "cache")))

    rows = list(csv.DictReader((tiny_skin8 / "manifest.csv").open()))
    with pytest.raises(AdaptError, match="source"):  # a dev source is not a site
        run(_reviews(tmp_path / "as_dev", tiny_skin8, source=rows[0]["source"]))
    shared = _reviews(tmp_path / "shared", tiny_skin8)
    text = (shared / "manifest.csv").read_text().replace("gate-7:cam:run:mpox0", rows[0]["group"])
    (shared / "manifest.csv").write_text(text)
    with pytest.raises(AdaptError, match="both"):  # one person on both sides of the split
        run(shared)
    unknown = _reviews(tmp_path / "unknown", tiny_skin8)
    (unknown / "manifest.csv").write_text((unknown / "manifest.csv").read_text().replace(",normal,", ",smallpox,"))
    with pytest.raises(AdaptError, match="smallpox"):
        run(unknown)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    with pytest.raises(AdaptError, match="not empty"):
        run(_reviews(tmp_path / "fine", tiny_skin8), busy)
    assert not (tmp_path / "never").exists()
