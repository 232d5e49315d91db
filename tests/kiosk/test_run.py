"""``mpox-aism run`` overrides do what they say and nothing more."""

from __future__ import annotations

from pathlib import Path

from mpox_aism.kiosk.config import load_config
from mpox_aism.kiosk.run import apply_overrides, get_args_parser

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "kiosk.yaml"


def test_source_runs_alone_with_the_first_cameras_settings(capsys) -> None:
    cfg = load_config(EXAMPLE)
    assert len(cfg.cameras) == 2  # the example has a second camera (/dev/video0)
    out = apply_overrides(cfg, get_args_parser().parse_args(["--source", "clip.mp4"]))
    assert [c.source for c in out.cameras] == ["clip.mp4"]
    first = cfg.cameras[0]
    assert out.cameras[0].model_dump() == {**first.model_dump(), "source": "clip.mp4"}
    assert "not started: terminal" in capsys.readouterr().err


def test_other_overrides_leave_the_cameras_alone() -> None:
    cfg = load_config(EXAMPLE)
    out = apply_overrides(cfg, get_args_parser().parse_args(["--mqtt-url", "mqtt://127.0.0.1:1884",
                                                             "--http-port", "0", "--keep-serving"]))
    assert out.cameras == cfg.cameras
    assert out.mqtt.url == "mqtt://127.0.0.1:1884" and out.http.port == 0 and out.exit_when_done is False


def test_the_demo_writes_no_native_noise_to_stderr(tmp_path) -> None:
    """`mpox-aism run`'s stderr holds log lines only; MediaPipe/LiteRT's own output is behind --log-level debug."""
    import json
    import re
    import subprocess
    import sys

    from tests.conftest import default_model_or_skip

    default_model_or_skip()
    env = {"STATE_DIRECTORY": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mpox_aism.cli", "run", "--http-port", "0", *extra], cwd=root,
                              env=env, capture_output=True, text=True, timeout=300)

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    lines = [ln for ln in quiet.stderr.splitlines() if ln.strip()]
    ours = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
    assert lines and all(ours.match(ln) for ln in lines), [ln for ln in lines if not ours.match(ln)][:5]
    assert "mpox-aism done" in quiet.stdout

    as_json = run("--log-format", "json", "--log-level", "debug")
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    docs = [json.loads(ln) for ln in as_json.stderr.splitlines() if ln.strip()]
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    assert any(d["logger"] == "native" for d in docs)  # the native output is there, at DEBUG, as a log line
