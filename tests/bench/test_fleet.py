"""``mpox-aism bench fleet`` for a few seconds: 3 real kiosks, a real mosquitto, the console SIGKILLed and
restarted, and a clean broker restart; lost (counted from the console's store) must be 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mpox_aism.bench.mosquitto import APT_LINE, find_mosquitto
from mpox_aism.cli import main as cli

KEYS = {"published", "received", "duplicates", "lost", "ingest_p50_ms", "ingest_p99_ms", "console_rss_mb",
        "console_cpu_percent", "kiosks", "seconds", "rate", "machine", "restarts"}


@pytest.mark.skipif(find_mosquitto() is None, reason=f"mosquitto broker not installed; install it with: {APT_LINE}")
def test_fleet_runs_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    assert cli(["bench", "fleet", "--kiosks", "3", "--seconds", "4", "--rate", "4", "--restart-console",
                "--console-down-s", "1", "--restart-broker", "--broker-signal", "term",
                "--workdir", str(tmp_path / "run"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r) >= KEYS
    assert r["complete"] and r["published"] > 0
    assert r["lost"] == 0 and r["received"] == r["published"] and r["unexpected"] == 0, r
    assert r["invalid"] == 0 and r["conflicts"] == 0
    assert [x["what"] for x in r["restarts"]] == ["broker", "console"]
    assert r["stations_seen"] == 3 and r["stations_with_status"] == 3
    assert r["console_rss_mb"] > 0 and r["machine"]["cpu_count"]
