"""The model slots: install (checked) → shadow, promote, rollback, status; atomic file, audit rows, CLI exit codes.

The model directories here are tiny stand-ins: an ONNX file that holds only the metadata record (what the
slot rules read), and a ``metrics.json`` with a ``site`` object where a site head is meant.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mpox_aism.cli import main as cli
from mpox_aism.contracts.model import ONNX_META_KEY, ModelMeta, meta_to_json
from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.models import ModelError, ModelStore, Slots, active_models, describe

ARCH = "mobilenet_v2+efficientnet_lite2"


def fake_model(root: Path, version: str, *, arch: str = ARCH, size: int = 224, site: dict | None = None) -> Path:
    import onnx
    from onnx import helper

    d = root / f"src-{version}"
    d.mkdir(parents=True)
    proto = helper.make_model(helper.make_graph([], "g", [], []))
    proto.metadata_props.add(key=ONNX_META_KEY, value=meta_to_json(ModelMeta(image_size=size, model_version=version,
                                                                            arch=arch)))
    onnx.save(proto, str(d / "model.onnx"))
    if site is not None:
        (d / "metrics.json").write_text(json.dumps({"macro_f1": 0.6, "site": site}))
    return d


def site(base: str, refused: list[str] | None = None) -> dict:
    return {"base_model_version": base, "refused": refused or [], "passed": not refused}


@pytest.fixture
def env(tmp_path):
    base = fake_model(tmp_path, "base00000001")
    return tmp_path, base, ModelStore(tmp_path / "state")


def test_install_promote_rollback(env):
    tmp, base, store = env
    head = fake_model(tmp, "site00000001", site=site("base00000001"))
    ch = store.install(head, by="alice", fallback=base)
    assert ch.slots == Slots(current=None, shadow="site00000001") and "systemctl restart mpox-aism" in ch.message
    assert (store.path("site00000001") / "model.onnx").is_file()  # a copy: the source may go
    assert json.loads(store.active_path.read_text()) == {"current": None, "shadow": "site00000001", "previous": None}
    assert active_models(store.state_dir).shadow == store.path("site00000001")

    ch = store.promote(by="alice", fallback=base)
    assert ch.slots == Slots(current="site00000001", shadow=None, previous="base00000001")
    assert (store.path("base00000001") / "model.onnx").is_file()  # the configured model adopted, for rollback
    assert active_models(store.state_dir).current == store.path("site00000001")

    # a second site head fitted on the same base (the current's own base) is accepted
    other = fake_model(tmp, "site00000002", site=site("base00000001"))
    store.install(other, by="bob")
    ch = store.rollback(by="bob")  # a newer shadow is there: it stays, the rolled-back head leaves the slots
    assert ch.slots == Slots(current="base00000001", shadow="site00000002", previous=None)
    assert "out of the slots" in ch.message
    assert not list(store.root.glob(".*.tmp")) and not list(store.root.glob(".incoming-*"))

    rows = [(r.user, r.action) for r in Accounts(store.state_dir / "staff.sqlite3").audit()]
    assert rows == [("alice", "model installed"), ("alice", "model promoted"), ("bob", "model installed"),
                    ("bob", "model rolled back")]


def test_rollback_puts_the_promoted_head_back_in_shadow(env):
    tmp, base, store = env
    store.install(fake_model(tmp, "site00000001", site=site("base00000001")), by="a", fallback=base)
    store.promote(by="a", fallback=base)
    ch = store.rollback(by="a")
    assert ch.slots == Slots(current="base00000001", shadow="site00000001", previous=None)
    with pytest.raises(ModelError, match="nothing to roll back"):
        store.rollback(by="a")
    ch = store.promote(by="a")  # the inverse again
    assert ch.slots == Slots(current="site00000001", shadow=None, previous="base00000001")


def test_refusals(env):
    tmp, base, store = env
    with pytest.raises(ModelError, match="nothing to promote"):
        store.promote(by="a", fallback=base)
    with pytest.raises(ModelError, match="nothing to roll back"):
        store.rollback(by="a")
    empty = tmp / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="not a model directory"):
        store.install(empty, by="a", fallback=base)
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="unreadable model metadata"):
        store.install(broken, by="a", fallback=base)
    failed = fake_model(tmp, "site0000bad1", site=site("base00000001", ["dev class measles: F1 0.100 out of fold"]))
    with pytest.raises(ModelError, match=r"failed its own checks.*dev class measles"):
        store.install(failed, by="a", fallback=base)
    with pytest.raises(ModelError, match="arch resnet50 ≠ current.s " + re.escape(ARCH)):
        store.install(fake_model(tmp, "other0000001", arch="resnet50"), by="a", fallback=base)
    with pytest.raises(ModelError, match="image_size 256 ≠ current's 224"):
        store.install(fake_model(tmp, "other0000002", size=256), by="a", fallback=base)
    with pytest.raises(ModelError, match="fitted on base model elsewhere0001, but the current model is base00000001"):
        store.install(fake_model(tmp, "site00000009", site=site("elsewhere0001")), by="a", fallback=base)
    with pytest.raises(ModelError, match="already the current model"):
        store.install(base, by="a", fallback=base)
    with pytest.raises(ModelError, match="--by"):
        store.install(fake_model(tmp, "site00000001", site=site("base00000001")), by=" ", fallback=base)
    assert store.slots() == Slots() and not store.active_path.exists()
    assert Accounts(store.state_dir / "staff.sqlite3").audit() == []  # refusals change nothing, record nothing


def test_describe_reads_a_real_model_directory(default_model):
    s = describe(default_model)
    assert s.arch and s.image_size > 0 and len(s.model_version) == 12 and s.passed


def test_broken_slot_file_runs_the_configured_model(env, caplog):
    _, _, store = env
    store.root.mkdir(parents=True)
    store.active_path.write_text("{half")
    assert active_models(store.state_dir).current is None
    assert "model slots not read" in caplog.text


def test_cli_exit_codes(env, capsys, monkeypatch):
    tmp, base, store = env
    cfg = tmp / "kiosk.yaml"
    cfg.write_text(f"station_id: s\ncameras: [{{name: c, source: {tmp}}}]\nclassifier: {{model: {base}}}\n")
    common = ["models", "--config", str(cfg), "--state-dir", str(store.state_dir)]
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("USER", "root")
    assert cli([*common, "--by", "dave", "promote"]) == 2 and "nothing to promote" in capsys.readouterr().err
    head = fake_model(tmp, "site00000001", site=site("base00000001"))
    assert cli([*common, "install", str(head)]) == 2 and "--by NAME" in capsys.readouterr().err  # root names no one
    monkeypatch.setenv("SUDO_USER", "carol")
    assert cli([*common, "install", str(head)]) == 0
    assert "installed site00000001 in shadow" in capsys.readouterr().out
    assert cli([*common, "status"]) == 0
    out = capsys.readouterr().out
    assert "shadow:   site00000001" in out and "configured model" in out
    assert cli([*common, "--by", "dave", "promote"]) == 0 and "systemctl restart" in capsys.readouterr().out
    assert cli([*common, "rollback"]) == 0
    assert cli([*common, "status"]) == 0 and "current:  base00000001" in capsys.readouterr().out
    assert cli([*common, "rollback"]) == 2 and "nothing to roll back" in capsys.readouterr().err
    assert cli([*common, "install", str(tmp / "nowhere")]) == 2
    users = [(r.user, r.action) for r in Accounts(store.state_dir / "staff.sqlite3").audit()]
    assert users == [("carol", "model installed"), ("dave", "model promoted"), ("carol", "model rolled back")]
