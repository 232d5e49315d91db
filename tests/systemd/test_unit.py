"""The systemd unit: `systemd-analyze verify` must be silent about it, and its exposure score ≤ 2.5.

`systemd-analyze verify` (systemd 252) only WARNS on bad values ("Failed to parse service type,
ignoring") and still exits 0, so the test reads its output and fails on any line about our unit.
It does check that ExecStart's binary exists, so the check runs on a temporary copy whose
ExecStart binary is /bin/true (arguments kept). User=/Group= are kept: verify does not resolve
users (that happens when the service starts), so no `useradd` is needed on the test machine.

PID 1 is not systemd on the build machines, so the unit cannot be started here; these checks
are static. CI: `apt-get install -y systemd` provides systemd-analyze.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "mpox-aism.service"
APT_LINE = "apt-get install -y systemd"
MAX_EXPOSURE = 2.5  # the goal; the unit measures 1.6 with systemd 252
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason=f"systemd-analyze not installed: {APT_LINE}")


def _env() -> dict[str, str]:
    # plain text (no colours, pager or locale-dependent wording)
    return {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, errors="replace",
                          env=_env(), cwd=cwd, timeout=120, check=False)


def checkable_copy(text: str, folder: Path, name: str = UNIT.name) -> Path:
    """The unit with ExecStart's binary replaced by /bin/true, under its real name."""
    new, n = re.subn(r"^(ExecStart=[-@:+!]*)\S+", r"\1/bin/true", text, flags=re.M)
    assert n == 1, "expected exactly one ExecStart= line"
    path = folder / name
    path.write_text(new)
    return path


def verify_problems(unit: Path) -> list[str]:
    """Lines `systemd-analyze verify` prints about `unit`; lines about other units are ignored."""
    proc = _analyze("verify", "--man=no", str(unit), cwd=unit.parent)
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    own_prefixes = (str(unit), f"{unit.name}:", "./" + unit.name)
    foreign = re.compile(r"^(?:/(?:usr/)?lib/systemd/|/etc/systemd/|/run/systemd/|[\w@.\\-]+\.(?:service|socket|"
                         r"target|mount|automount|swap|path|timer|slice|scope|device):)")
    # a line names our unit, or names nothing we can attribute: both count against us
    ours = [ln for ln in lines if ln.startswith(own_prefixes) or not foreign.match(ln)]
    if proc.returncode != 0 and not ours:
        ours.append(f"systemd-analyze verify exited {proc.returncode}")
    return ours


@needs_analyze
def test_verify_is_silent(tmp_path):
    problems = verify_problems(checkable_copy(UNIT.read_text(), tmp_path))
    assert not problems, "systemd-analyze verify complains about the unit:\n" + "\n".join(problems)


@needs_analyze
def test_verify_check_catches_bad_values(tmp_path):
    """Guard for the test above: a typo that verify only warns about must be reported."""
    bad = UNIT.read_text().replace("Type=notify\n", "Type=notifyy\n").replace("ProtectProc=invisible\n",
                                                                              "ProtectProc=invisibl\n")
    problems = verify_problems(checkable_copy(bad, tmp_path))
    assert any("notifyy" in p for p in problems), problems
    assert any("invisibl" in p for p in problems), problems


@needs_analyze
def test_exposure_score(tmp_path, capsys):
    check_exposure(UNIT, tmp_path, capsys)


def check_exposure(unit_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`systemd-analyze security --offline` of the unit: shown, and at most MAX_EXPOSURE."""
    unit = checkable_copy(unit_file.read_text(), tmp_path, unit_file.name)
    proc = _analyze("security", "--offline=yes", "--no-pager", str(unit), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and "offline" in out and ("unrecognized" in out or "Unknown" in out):
        pytest.skip(f"this systemd-analyze has no --offline (needs systemd >= 250): {out.strip()[:200]}")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert m, f"no overall exposure in the output (exit {proc.returncode}):\n{out[-2000:]}"
    score = float(m.group(1))
    exposed = [ln for ln in out.splitlines() if ln.startswith("✗")]
    with capsys.disabled():  # the score is the result: show it even without -s
        print(f"\nsystemd-analyze security --offline=yes {unit_file.relative_to(REPO)}: exposure {score}")
        for ln in exposed:
            print("  " + re.sub(r"\s{2,}", "  ", ln))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n" + "\n".join(exposed)


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ln in text.splitlines():
        if "=" in ln and not ln.lstrip().startswith(("#", ";", "[")):
            k, v = ln.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_contract_with_the_daemon():
    """The settings the daemon's code relies on (no systemd needed for this one)."""
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]  # daemon sends READY=1 / WATCHDOG=1
    assert s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"]
    assert s["ExecStart"] == ["/opt/mpox-aism/.venv/bin/mpox-aism run --config /etc/mpox-aism/kiosk.yaml"]
    assert "mqtt-password:/etc/mpox-aism/mqtt-password" in s["LoadCredential"]  # mpox_aism.kiosk.config.secret()
    assert s["StateDirectory"] == ["mpox-aism"]  # outbox path relative to $STATE_DIRECTORY
    env = " ".join(s["Environment"])
    assert "MPOX_AISM_CACHE=%C/mpox-aism" in env  # mpox_aism.pipeline.mediapipe_models.default_cache_dir()
    assert s["User"] == ["mpox-aism"] and s["CapabilityBoundingSet"] == [""]
    assert "MemoryDenyWriteExecute" not in s  # breaks oneDNN's JIT; see the comment in the unit
