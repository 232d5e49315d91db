"""A real daemon process with a shadow head installed, then promoted, then rolled back (issue 26 step 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mpox_aism.cli import main as cli
from tests.conftest import link_photos
from tests.kiosk.test_daemon import _run


@pytest.fixture(scope="module")
def site_head(tmp_path_factory, default_model) -> tuple[Path, str, str]:
    """A second model on the default's backbone: its head bias nudged, saved, exported, with a passed site report."""
    torch = pytest.importorskip("torch")
    from mpox_aism.export.onnx import export_onnx
    from mpox_aism.model.modeldir import load_model, save_model
    from mpox_aism.model.zoo import classifier_head

    out = tmp_path_factory.mktemp("site-head")
    model, info = load_model(default_model)
    base = info.model_version
    with torch.no_grad():
        classifier_head(model).bias.add_(0.05 * torch.linspace(-1, 1, len(info.labels)))
    info.recipe = {**info.recipe, "base_model_version": base}
    save_model(out, model, info, omit_imagenet=True)
    export_onnx(out, out / "model.onnx")
    (out / "metrics.json").write_text(json.dumps({"site": {"base_model_version": base, "refused": [],
                                                           "passed": True}}))
    assert info.model_version != base
    return out, base, info.model_version


def _daemon(tmp_path: Path, folder: Path, state: Path, name: str) -> tuple[dict, list[dict], list[dict]]:
    """The run's summary, its events and its health messages (a model change is a notice, issue 29)."""
    cfg = {"station_id": "gate-7", "cameras": [{"name": "desk", "source": str(folder), "hold_frames": 5,
                                                "detect_stride": 1, "classify_stride": 1}],
           "mqtt": {"url": None}, "outbox": {"path": str(tmp_path / f"outbox-{name}.sqlite3")},
           "http": {"enabled": False}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = tmp_path / f"summary-{name}.json"
    proc = _run("run", "--config", str(path), "--summary", str(summary), state=state)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mpox_aism.kiosk.outbox import Outbox

    with Outbox(tmp_path / f"outbox-{name}.sqlite3") as ob:
        rows = ob.pending(10_000)
    events = [json.loads(m.payload) for m in rows if m.topic == "mpox-aism/gate-7/events"]
    health = [json.loads(m.payload) for m in rows if m.topic == "mpox-aism/gate-7/health"]
    assert len(events) + len(health) == len(rows)
    return json.loads(summary.read_text()), events, health


def test_shadow_promote_rollback(tmp_path, site_head, capsys):
    head, base, site = site_head
    folder = link_photos(tmp_path, "mpox", 3)
    state = tmp_path / "state"
    models = ["models", "--state-dir", str(state), "--by", "alice"]

    assert cli([*models, "install", str(head)]) == 0
    s, events, health = _daemon(tmp_path, folder, state, "shadow")
    assert health == []  # the first start records the models, and says nothing
    assert s["model_version"] == base and s["shadow"]["model_version"] == site and s["shadow"]["running"]
    assert sum(s["shadow"]["decisions"].values()) >= 1 and s["shadow"]["errors"] == 0
    assert s["shadow"]["tracks_compared"] >= 1
    assert events and {e["model_version"] for e in events} == {base}  # the shadow never decides

    assert cli([*models, "promote"]) == 0
    assert "systemctl restart mpox-aism" in capsys.readouterr().out
    s, events, health = _daemon(tmp_path, folder, state, "promoted")
    assert [(h["check"], h["subject"], h["state"]) for h in health] == [("model_changed", "model", "notice"),
                                                                        ("model_changed", "shadow", "notice")]
    assert s["model_version"] == site and s["shadow"] is None
    assert events and {e["model_version"] for e in events} == {site}

    assert cli([*models, "rollback"]) == 0
    s, events, health = _daemon(tmp_path, folder, state, "rolled-back")
    assert [h["subject"] for h in health] == ["model", "shadow"] and base in health[0]["detail"]
    assert s["model_version"] == base and s["shadow"]["model_version"] == site  # back in shadow
    assert events and {e["model_version"] for e in events} == {base}


def test_a_broken_shadow_never_stops_the_current_model(tmp_path, site_head):
    head, base, site = site_head
    folder = link_photos(tmp_path, "mpox", 2)
    state = tmp_path / "state"
    assert cli(["models", "--state-dir", str(state), "--by", "alice", "install", str(head)]) == 0
    installed = state / "models" / site
    shutil.rmtree(installed)
    installed.mkdir()
    (installed / "model.onnx").write_bytes(b"broken after install")
    s, events, _ = _daemon(tmp_path, folder, state, "broken")
    assert s["model_version"] == base and events and {e["model_version"] for e in events} == {base}
    assert s["shadow"] == {"model_version": site, "running": False, "decisions": dict.fromkeys(s["decisions"], 0),
                           "tracks_compared": 0, "tracks_differ": 0, "errors": 1}
