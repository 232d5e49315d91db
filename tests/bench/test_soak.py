"""``mpox-aism bench soak`` for a few seconds on a generated clip: it runs the daemon, samples, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpox_aism.bench.soak import growth
from mpox_aism.cli import main as cli
from tests.conftest import default_model_or_skip


def test_growth_is_measured_after_the_warmup() -> None:
    samples = [{"t": t, "rss_mb": 500 + (400 if t < 60 else t / 60)} for t in range(0, 3600 + 1, 60)]
    g = growth(samples, "rss_mb", warmup=60)
    assert g["from_s"] == 60 and g["first"] == pytest.approx(501) and g["last"] == pytest.approx(560)
    assert g["slope_per_hour"] == pytest.approx(60, abs=0.1)


def test_soak_runs_the_daemon_and_reports(tmp_path: Path) -> None:
    default_model_or_skip()
    from tests.faults.test_bad_input import write_video

    clip = write_video(tmp_path / "clip.avi", frames=20)
    out = tmp_path / "soak.json"
    assert cli(["bench", "soak", "--minutes", "0.4", "--interval", "2", "--warmup", "4", "--source", str(clip),
                "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["exit_code"] == 0 and len(r["samples"]) >= 5
    assert {"rss_mb", "fds", "threads"} <= set(r["growth"])
    assert all(s["rss_mb"] >= 0 and s["fds"] >= 3 and s["threads"] >= 1 for s in r["samples"])
    assert r["samples"][-1]["rss_mb"] > 100 and r["samples"][-1]["threads"] > 1  # the models are loaded
    assert r["daemon_summary"]["frames"] > 20  # the clip looped
    assert max(s.get("frames", 0) for s in r["samples"]) > 0  # /healthz was read
