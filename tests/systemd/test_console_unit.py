"""The console's systemd unit: `systemd-analyze verify` silent, exposure ≤ 2.5, and the settings the
console's code relies on. The checks themselves are the kiosk unit's (tests/systemd/test_unit.py)."""

from __future__ import annotations

from tests.systemd.test_unit import REPO, _settings, check_exposure, checkable_copy, needs_analyze, verify_problems

UNIT = REPO / "systemd" / "mpox-aism-console.service"


@needs_analyze
def test_verify_is_silent(tmp_path):
    problems = verify_problems(checkable_copy(UNIT.read_text(), tmp_path, UNIT.name))
    assert not problems, "systemd-analyze verify complains about the unit:\n" + "\n".join(problems)


@needs_analyze
def test_exposure_score(tmp_path, capsys):
    check_exposure(UNIT, tmp_path, capsys)


def test_unit_contract_with_the_console():
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]  # service.run: READY=1, WATCHDOG=1
    assert s["ExecStart"] == ["/opt/mpox-aism/.venv/bin/mpox-aism console --config /etc/mpox-aism/console.yaml"]
    assert s["LoadCredential"] == ["mqtt-password:/etc/mpox-aism/console-mqtt-password"]  # kiosk.config.secret()
    assert s["StateDirectory"] == ["mpox-aism-console"]  # store path relative to $STATE_DIRECTORY
    assert s["User"] == ["mpox-aism"] and s["CapabilityBoundingSet"] == [""]
