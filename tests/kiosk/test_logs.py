"""Native output behind the log: severe lines stay visible, the rest is DEBUG; set up once only."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_native_lines_are_routed_by_severity() -> None:
    code = textwrap.dedent("""
        import faulthandler, os, time
        from mpox_aism.kiosk.logs import configure, quiet_native_stderr
        configure("info")
        faulthandler.enable()
        assert quiet_native_stderr() is True
        assert quiet_native_stderr() is False  # idempotent: a second call must not take the pipe for stderr
        os.write(2, b"WARNING: [model_load.cc:402] Sparsity tensors may not yet be fully supported.\\n")
        os.write(2, b"E1202 12:00:00.000000 1 runner.cc:10] delegate failed\\n")
        time.sleep(0.5)
        import logging
        logging.getLogger("kiosk").warning("ours")
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert "WARNING kiosk: ours" in lines
    assert any(ln.startswith("ERROR native: E1202") for ln in lines), lines
    assert not any("Sparsity" in ln for ln in lines), lines  # DEBUG: not shown at info
