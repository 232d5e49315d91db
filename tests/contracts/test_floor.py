"""Serving stands on the floor alone: with the onnxruntime backend, torch is never imported.

An edge box that runs ONNX Runtime or TensorRT must not carry torch (gigabytes of wheels, seconds of
start-up) to check a dtype. Each check runs in a fresh interpreter, because this test process has
imported torch long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, tmp_path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"STATE_DIRECTORY": str(tmp_path), "PATH": "/usr/bin:/bin",
                                           "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


FLOOR = ("contracts.decision", "contracts.images", "contracts.labels", "contracts.model", "contracts.preprocess",
         "contracts.sample", "contracts.skin", "contracts.machine", "contracts.familiarity")
SERVING = ("inference.backends", "inference.backends.onnxruntime", "inference.classifier", "inference.metadata",
           "pipeline.pipeline", "pipeline.regions", "pipeline.sources", "pipeline.crops", "pipeline.tracker",
           "kiosk.daemon", "kiosk.run", "kiosk.config", "kiosk.events", "kiosk.outbox", "kiosk.mqtt",
           "kiosk.web.server", "kiosk.web.app", "kiosk.web.diagnosis", "kiosk.web.upload", "kiosk.web.staff",
           "kiosk.privacy", "kiosk.metrics", "inference.explainer", "kiosk.labels", "kiosk.label_export",
           "console.service", "console.subscriber", "console.store", "console.ingest", "console.config")


def _imports(modules: tuple[str, ...]) -> str:
    return "; ".join(f"import mpox_aism.{m}" for m in modules)


def test_the_floor_imports_no_torch(tmp_path):
    got = _run(f"""
        import json, sys
        {_imports(FLOOR)}
        print(json.dumps({{"torch": "torch" in sys.modules}}))
    """, tmp_path)
    assert got == {"torch": False}


def test_serving_modules_import_no_torch(tmp_path):
    got = _run(f"""
        import json, sys
        {_imports(SERVING)}
        print(json.dumps({{"torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))[:3]}}))
    """, tmp_path)
    assert got == {"torch": []}


@pytest.mark.usefixtures("default_model")
def test_the_daemon_runs_the_demo_without_torch(tmp_path):
    """The whole job: onnxruntime classifier, detector, pipeline, events to the outbox, HTTP up and down.

    Images are not attached here (``publish_crops: false``): the Grad-CAM explainer still needs torch
    until heat maps come from the ONNX model's own outputs.
    """
    got = _run(f"""
        import json, sys, yaml
        from mpox_aism.kiosk.run import demo_config
        data = demo_config().model_dump(mode="json")
        data["classifier"]["backend"] = "onnxruntime"
        data["privacy"]["publish_crops"] = False
        data["http"]["port"] = 0
        open("{tmp_path}/kiosk.yaml", "w").write(yaml.safe_dump(data))
        from mpox_aism.cli import main  # the front door, `mpox-aism run --config FILE`
        rc = main(["run", "--config", "{tmp_path}/kiosk.yaml", "--summary", "{tmp_path}/summary.json"])
        print(json.dumps({{"rc": rc, "torch": "torch" in sys.modules}}))
    """, tmp_path)
    assert got == {"rc": 0, "torch": False}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] > 0 and sum(summary["decisions"].values()) > 0  # it did the job


@pytest.mark.usefixtures("default_model")
def test_events_with_heat_maps_need_no_torch(tmp_path):
    """Real skin photos at close range: events carry the crop and its heat map, from the ONNX model itself."""
    from tests.conftest import link_photos

    folder = link_photos(tmp_path, "mpox", 4)
    got = _run(f"""
        import json, sqlite3, sys
        from mpox_aism.kiosk.config import parse_config
        from mpox_aism.kiosk.daemon import Daemon
        cfg = parse_config({{"station_id": "floor", "classifier": {{"backend": "onnxruntime"}},
                            "http": {{"enabled": False}},
                            "cameras": [{{"name": "desk", "source": "{folder}", "hold_frames": 4,
                                          "close_range": True}}]}})
        rc = Daemon(cfg).run()
        rows = sqlite3.connect("{tmp_path}/outbox.sqlite3").execute("SELECT payload FROM outbox").fetchall()
        events = [json.loads(r[0]) for r in rows]
        print(json.dumps({{"rc": rc, "torch": "torch" in sys.modules, "events": len(events),
                          "with_heat_map": sum("gradcam_jpeg_base64" in e for e in events)}}))
    """, tmp_path)
    assert got["rc"] == 0 and got["torch"] is False
    assert got["events"] > 0 and got["with_heat_map"] == got["events"], got
