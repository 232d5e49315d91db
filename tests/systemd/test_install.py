"""systemd/install.sh: syntax, and a --dry-run that shows every step and changes nothing.

The real install needs root and systemd as PID 1, which the build machines do not have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "systemd" / "install.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def test_syntax():
    proc = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_dry_run_shows_the_steps_and_changes_nothing(tmp_path):
    prefix = tmp_path / "opt" / "mpox-aism"
    proc = _run("--dry-run", "--prefix", str(prefix), env={"MPOX_AISM_INSTALL_DEV": str(tmp_path / "nodev")})
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for expected in (
        "==> service user mpox-aism",
        f"make -C {prefix} setup",
        "install -d -m 0750 -o root -g mpox-aism /etc/mpox-aism",
        "write /etc/systemd/system/mpox-aism.service (mode 0644",
        f"ExecStart={prefix}/.venv/bin/mpox-aism run --config /etc/mpox-aism/kiosk.yaml",  # prefix rewritten
        "ensure_models",
        "/var/cache/mpox-aism/mediapipe",
        "systemctl daemon-reload",
        "systemctl enable mpox-aism",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    if not Path("/etc/mpox-aism/mqtt-password").exists():
        assert "NOT started" in out and "-m 0600" in out  # the password reminder
    assert not (tmp_path / "opt").exists(), "--dry-run created the prefix"


def test_dry_run_writes_a_jetson_dropin_for_the_nodes_present(tmp_path):
    # [ -c ] follows symlinks, so links to /dev/null stand in for a Jetson's GPU nodes
    dev = tmp_path / "dev"
    (dev / "nvgpu" / "igpu0").mkdir(parents=True)
    for name in ("nvhost-ctrl-gpu", "nvmap", "nvgpu/igpu0/ctrl"):
        (dev / name).symlink_to("/dev/null")
    proc = _run("--dry-run", "--prefix", str(tmp_path / "p"), env={"MPOX_AISM_INSTALL_DEV": str(dev)})
    assert proc.returncode == 0, proc.stderr
    assert "mpox-aism.service.d/50-jetson.conf" in proc.stdout
    for name in ("nvhost-ctrl-gpu", "nvmap", "nvgpu/igpu0/ctrl"):
        assert f"DeviceAllow={dev / name} rw" in proc.stdout


def test_bad_arguments():
    assert _run("--bogus").returncode == 2
    assert _run("--prefix", "relative/path", "--dry-run").returncode == 2
    assert "--dry-run" in _run("--help").stdout


@pytest.mark.skipif(os.geteuid() == 0 and Path("/run/systemd/system").is_dir(),
                    reason="root on a systemd machine: a real run would install the service")
def test_real_run_refuses_without_root_or_systemd():
    prefix = Path(f"/opt/mpox-aism-test-{os.getpid()}")  # not under /tmp: the script refuses those first
    proc = _run("--prefix", str(prefix))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "root" in proc.stderr or "PID 1 is not systemd" in proc.stderr
    assert not prefix.exists()


def test_refuses_a_prefix_the_sandbox_hides():
    proc = _run("--prefix", "/home/kiosk/mpox-aism")  # ProtectHome=yes
    assert proc.returncode == 2 and "invisible" in proc.stderr
