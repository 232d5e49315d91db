"""``mpox-aism bench streams``: the daemon's own workers on N looped streams (behaviour, never timing)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from mpox_aism.bench.streams import DEFAULT_CLIP, camera_threads, find_max
from mpox_aism.cli import main as cli
from tests.conftest import SHARED_DATA, default_model_or_skip


def fake(fps_by_n: dict[int, float]) -> tuple[list[int], Any]:
    """A measurement that reports ``fps_by_n[n]`` for every stream, and records the Ns it was asked for."""
    asked: list[int] = []

    def measure(n: int) -> dict[str, Any]:
        asked.append(n)
        return {"streams": n, "fps": [fps_by_n[n]] * n}
    return asked, measure


def test_find_max_stops_at_the_first_n_under_the_bound() -> None:
    asked, measure = fake({1: 30, 2: 20, 4: 11, 6: 9, 8: 50, 12: 50})
    best, runs = find_max(measure, min_fps=10)
    assert best == 4 and asked == [1, 2, 4, 6]  # 8 is never tried, even though it would "pass"
    assert [r["ok"] for r in runs] == [True, True, True, False]


def test_find_max_is_zero_when_one_stream_fails() -> None:
    asked, measure = fake({1: 5, 2: 50})
    assert find_max(measure, min_fps=10)[0] == 0 and asked == [1]


def test_find_max_needs_every_stream_to_keep_the_bound() -> None:
    asked: list[int] = []

    def measure(n: int) -> dict[str, Any]:
        asked.append(n)
        return {"fps": [12.0] * (n - 1) + [9.9] if n == 2 else [12.0] * n}
    best, runs = find_max(measure, min_fps=10, steps=(1, 2, 4))
    assert best == 1 and asked == [1, 2] and runs[-1]["ok"] is False


def test_find_max_passes_every_step() -> None:
    _, measure = fake(dict.fromkeys((1, 2, 4, 6, 8, 12), 99.0))
    best, runs = find_max(measure, min_fps=10)
    assert best == 12 and len(runs) == 6


def test_streams_runs_the_daemon_workers_and_stops_them(tmp_path: Path) -> None:
    default_model_or_skip()
    clip = SHARED_DATA / "video" / DEFAULT_CLIP.name
    if not clip.is_file():
        pytest.skip(f"real clip not found at {clip}")
    before = set(threading.enumerate())
    out = tmp_path / "streams.json"
    assert cli(["bench", "streams", "--source", str(clip), "--streams", "2", "--seconds", "4",
                "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert {"streams", "fps", "latency_p50_ms", "latency_p99_ms", "dropped_frames", "cpu_percent", "rss_mb",
            "seconds", "command", "date", "machine"} <= set(r)
    assert r["streams"] == 2
    for key in ("fps", "latency_p50_ms", "latency_p99_ms", "dropped_frames", "frames"):
        assert len(r[key]) == 2, key
    assert all(f > 0 for f in r["frames"]) and all(f > 0 for f in r["fps"])
    assert all(p is not None and p >= 0 for p in r["latency_p99_ms"])
    assert r["cpu_percent"] > 0 and r["rss_mb"] > 100  # the models were loaded in this process
    assert camera_threads(2) == []  # the workers are stopped and joined
    assert set(threading.enumerate()) <= before
