"""``mpox-aism run`` overrides do what they say and nothing more."""

from __future__ import annotations

from pathlib import Path

from kiosk.config import load_config
from kiosk.run import apply_overrides, get_args_parser

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
