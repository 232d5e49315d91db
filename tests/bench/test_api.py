"""``bench api`` reports what clients saw; here against a real server whose limits refuse some requests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")


@pytest.mark.parametrize("kind", ["python", "curl"])
def test_bench_api_counts_answers_and_refusals(tmp_path: Path, monkeypatch, kind: str) -> None:
    """Both kinds of client: python threads, and loops of plain ``curl`` processes (the issue's own report)."""
    from mpox_aism.bench.api import get_args_parser, main
    from mpox_aism.inference.backends import load_classifier
    from mpox_aism.kiosk.config import ApiLimits
    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread
    from tests.conftest import default_model_or_skip, need_skin8

    if kind == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    photos = need_skin8() / "mpox"
    frames = {"n": 0}

    def status() -> dict[str, Any]:  # a camera that advances a frame per look
        frames["n"] += 1
        return {"down": [], "cameras": {"cam": {"frames": frames["n"]}}}

    monkeypatch.setenv("MPOX_AISM_API_TOKEN", "bench-token")
    with load_classifier("onnxruntime", default_model_or_skip()) as clf:
        app = create_app(classifier=clf, token="bench-token", status_provider=status,
                         limits=ApiLimits(max_rps=1, max_rps_per_client=1, burst=1))
        with ServerThread(app) as s:
            args = get_args_parser().parse_args(["--url", s.url, "--clients", "2", "--seconds", "2",
                                                 "--idle-seconds", "0.2", "--photos", str(photos),
                                                 "--clients-nice", "3",
                                                 "--json", str(tmp_path / "api.json"),
                                                 *(["--curl"] if kind == "curl" else [])])
            result = main(args)
    assert result == json.loads((tmp_path / "api.json").read_text())
    assert result["statuses"].get("200", 0) >= 1 and result["statuses"].get("429", 0) >= 1, result["statuses"]
    assert result["answered_p50_ms"] is not None and result["camera_fps_idle"] > 0
    assert result["clients_nice"] == 3  # the client threads ran niced (their own threads, not this one)
    assert result["clients_kind"] == kind and set(result["windows"]) == {"idle_before", "loaded", "idle_after"}
    assert result["windows"]["loaded"]["clients_cpu_percent"] > 0
    assert result["windows"]["loaded"]["daemon_cpu_percent"] is None  # attached by --url: no daemon process
