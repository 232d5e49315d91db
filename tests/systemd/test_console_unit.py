"""The console's systemd unit: `systemd-analyze verify` silent, exposure ≤ 2.5, and the settings the
console's code relies on. The checks themselves are the kiosk unit's (tests/systemd/test_unit.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.systemd.test_unit import MAX_EXPOSURE, REPO, _analyze, _settings, needs_analyze, verify_problems

UNIT = REPO / "systemd" / "mpox-aism-console.service"


def checkable_copy(text: str, folder: Path) -> Path:
    """The unit with ExecStart's binary replaced by /bin/true, under its own name."""
    new, n = re.subn(r"^(ExecStart=[-@:+!]*)\S+", r"\1/bin/true", text, flags=re.M)
    assert n == 1, "expected exactly one ExecStart= line"
    path = folder / UNIT.name
    path.write_text(new)
    return path


@needs_analyze
def test_verify_is_silent(tmp_path):
    problems = verify_problems(checkable_copy(UNIT.read_text(), tmp_path))
    assert not problems, "systemd-analyze verify complains about the unit:\n" + "\n".join(problems)


@needs_analyze
def test_exposure_score(tmp_path, capsys):
    unit = checkable_copy(UNIT.read_text(), tmp_path)
    proc = _analyze("security", "--offline=yes", "--no-pager", str(unit), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "offline" in out and ("unrecognized" in out or "Unknown" in out):
        pytest.skip(f"this systemd-analyze has no --offline (needs systemd >= 250): {out.strip()[:200]}")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert m, f"no overall exposure in the output (exit {proc.returncode}):\n{out[-2000:]}"
    score = float(m.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline=yes {UNIT.relative_to(REPO)}: exposure {score}")
    assert score <= MAX_EXPOSURE


def test_unit_contract_with_the_console():
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]  # service.run: READY=1, WATCHDOG=1
    assert s["ExecStart"] == ["/opt/mpox-aism/.venv/bin/mpox-aism console --config /etc/mpox-aism/console.yaml"]
    assert s["LoadCredential"] == ["mqtt-password:/etc/mpox-aism/console-mqtt-password"]  # kiosk.config.secret()
    assert s["StateDirectory"] == ["mpox-aism-console"]  # store path relative to $STATE_DIRECTORY
    assert s["User"] == ["mpox-aism"] and s["CapabilityBoundingSet"] == [""]
