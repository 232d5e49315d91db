"""Security faults against the real daemon process and a real mosquitto.

- A wrong MQTT password: the daemon says so clearly, keeps retrying (the broker's own log counts the refused
  connections), keeps every event in its outbox, exits 0; restarted with the right password it delivers them.
- A TLS broker config pointed at a plaintext listener: no connection, nothing reaches the plaintext broker,
  the events wait in the outbox; ``mqtts://`` without a ``tls:`` section is refused by ``validate-config``.
- Privacy: events published from photos of people never carry an image in which MediaPipe finds a face,
  unless ``privacy.allow_full_face`` is set (then the same check finds faces: the check can see them).
API tokens (401 without / with a wrong token, 503 with none configured) are exercised in
``test_bad_input.py`` against the daemon and in ``tests/kiosk/test_http.py``.

The photos are the built-in sample (two portraits) plus, when ``../shared`` is present, the 8 face photos
of ``people/``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from mpox_aism.kiosk.outbox import Outbox
from tests.conftest import REPO, SHARED_DATA, default_model_or_skip
from tests.faults.conftest import event_ids, outbox_rows, start_daemon, wait_daemon
from tests.kiosk.conftest import self_signed_cert

pytestmark = pytest.mark.faults
ALL_LABELS = ["mpox", "chickenpox", "measles", "bullous", "eczema", "urticaria", "vasculitis", "normal"]


def portraits(tmp_path: Path) -> Path:
    """Photos of people's faces (the built-in sample, and ../shared/data/people's face photos when present)."""
    from mpox_aism.contracts.sample import builtin_sample_dir

    d = builtin_sample_dir(tmp_path / "portraits") / "normal"
    people = SHARED_DATA / "people"
    if people.is_dir():
        for p in sorted(people.iterdir()):
            if not p.name.startswith("COCO") and p.suffix.lower() in (".jpg", ".png"):
                (d / p.name).symlink_to(p)
    return d


def daemon_config(tmp_path: Path, source: Path, mqtt: dict[str, Any], *, name: str = "kiosk.yaml",
                  privacy: dict[str, Any] | None = None, outbox: Path | None = None) -> Path:
    """One image-folder camera; every class notifiable, so each confident decision is published as an event."""
    cfg = {"station_id": "gate-sec",
           "cameras": [{"name": "desk", "source": str(source), "hold_frames": 5, "loop": False}],
           "decision": {"notifiable": ALL_LABELS},
           "mqtt": {"status_interval_s": 1.0, **mqtt},
           "outbox": {"path": str(outbox or tmp_path / "outbox.sqlite3"), "flush_timeout_s": 8},
           "http": {"enabled": False},
           "privacy": privacy or {}}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def run_daemon(cfg: Path, tmp_path: Path, tag: str) -> tuple[int, dict[str, Any], str]:
    log, summary = tmp_path / f"{tag}.log", tmp_path / f"{tag}.json"
    code = wait_daemon(start_daemon(cfg, summary, log), 600)
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    return code, json.loads(summary.read_text()), text


def test_wrong_mqtt_password_is_reported_retried_and_loses_nothing(make_broker, collectors, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    default_model_or_skip()
    b = make_broker(users={"kiosk": "right-horse", "console": "battery-staple"}, persistence=False)
    console = collectors(b.port, "mpox-aism/gate-sec/events", username="console",
                         password="battery-staple").wait_subscribed()
    outbox = tmp_path / "outbox.sqlite3"
    mqtt = {"url": f"mqtt://127.0.0.1:{b.port}", "username": "kiosk"}
    photos = portraits(tmp_path)
    cfg = daemon_config(tmp_path, photos, mqtt, outbox=outbox)

    monkeypatch.setenv("MPOX_AISM_MQTT_PASSWORD", "wrong-horse")
    _, summary, text = run_daemon(cfg, tmp_path, "wrong")
    refused = [line for line in b.log.read_text(errors="replace").splitlines()
               if "disconnected, not authorised" in line]  # mosquitto does not name refused clients
    pending = outbox_rows(outbox)
    assert "not authorised" in text and "retrying" in text, text[-3000:]
    assert summary["events"] >= 1 and summary["published"] == 0 and summary["pending"] == summary["events"]
    assert len(pending) == summary["events"] and not console.payloads()
    assert len(refused) >= 2, f"the broker saw {len(refused)} refused connection(s); expected retries"

    monkeypatch.setenv("MPOX_AISM_MQTT_PASSWORD", "right-horse")
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(photos.iterdir())[0]
    shutil.copy(first, one / first.name)
    _, summary2, _ = run_daemon(daemon_config(tmp_path, one, mqtt, outbox=outbox, name="right.yaml"), tmp_path,
                                "right")
    got = event_ids(console.payloads())
    expected = [json.loads(p)["event_id"] for _, _, p in pending]
    assert got[: len(expected)] == expected and summary2["pending"] == 0, (got, expected)
    print(f"\nFAULT wrong MQTT password: {len(refused)} refused connections in the broker log, "
          f"{len(expected)} events kept in the outbox, 0 published, exit 0; with the right password all "
          f"{len(expected)} delivered (+{summary2['events']} new), lost 0")


def test_tls_config_never_falls_back_to_plaintext(make_broker, collectors, tmp_path: Path) -> None:
    default_model_or_skip()
    cert, _ = self_signed_cert(tmp_path)
    b = make_broker(persistence=False)  # plaintext only
    console = collectors(b.port, "#").wait_subscribed()
    outbox = tmp_path / "outbox.sqlite3"
    cfg = daemon_config(tmp_path, portraits(tmp_path), {"url": f"mqtts://127.0.0.1:{b.port}",
                                                         "tls": {"ca_certs": str(cert)}}, outbox=outbox)
    _, summary, text = run_daemon(cfg, tmp_path, "tls")
    assert summary["events"] >= 1 and summary["published"] == 0, summary
    assert len(outbox_rows(outbox)) == summary["events"]
    assert not [t for t, _, _ in console.messages if t.startswith("mpox-aism/")], console.messages[:3]
    assert "cannot connect" in text or "SSL" in text, text[-3000:]

    bad = tmp_path / "no-tls.yaml"
    bad.write_text(yaml.safe_dump({"station_id": "gate-sec", "cameras": [{"name": "c", "source": "0"}],
                                   "mqtt": {"url": f"mqtts://127.0.0.1:{b.port}"}}))
    r = subprocess.run([sys.executable, "-m", "mpox_aism.cli", "validate-config", str(bad)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "mqtt" in (r.stdout + r.stderr) and "tls" in (r.stdout + r.stderr)
    print(f"\nFAULT TLS config vs plaintext broker: {summary['events']} events, 0 sent in the clear, "
          f"{summary['events']} kept in the outbox; mqtts:// without tls: refused by validate-config")


def _faces_in(event: dict[str, Any], detector: Any) -> int:
    """Faces in the published crop. The Grad-CAM overlay holds the same pixels under a heat map (whose colours
    once made the short-range model see a 0.63 "face" in an open hand), so the crop is what is audited."""
    bgr = cv2.imdecode(np.frombuffer(base64.b64decode(event["crop_jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR)
    return len([r for r in detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) if r.kind == "face"])


@pytest.mark.parametrize("allow_full_face", [False, True], ids=["default", "allow_full_face"])
def test_no_face_in_published_images_unless_enabled(broker, collectors, tmp_path: Path,
                                                    allow_full_face: bool) -> None:
    default_model_or_skip()
    from mpox_aism.pipeline.regions import RegionDetector

    console = collectors(broker.port, "mpox-aism/gate-sec/events").wait_subscribed()
    cfg = daemon_config(tmp_path, portraits(tmp_path), {"url": f"mqtt://127.0.0.1:{broker.port}"},
                        privacy={"allow_full_face": allow_full_face})
    _, summary, _ = run_daemon(cfg, tmp_path, "privacy")
    events = [json.loads(p) for p in console.payloads()]
    assert events and len(events) == summary["published"], summary
    with_images = [e for e in events if "crop_jpeg_base64" in e]
    # an auditor of its own, stricter than the daemon's guard (full-range at 0.5): both MediaPipe models
    with RegionDetector(min_face_score=0.5, max_hands=0) as near, \
            RegionDetector(min_face_score=0.5, max_hands=0, face_model="full_range") as far:
        faces = [_faces_in(e, near) + _faces_in(e, far) for e in with_images]
    face_events = [e for e in events if "face" in e["region_kinds"]]
    print(f"\nFAULT privacy (allow_full_face={allow_full_face}): {len(events)} events from portraits, "
          f"{len(face_events)} decided on a face, {len(with_images)} with images, faces found in them: {sum(faces)}")
    if allow_full_face:
        assert sum(faces) > 0, "allow_full_face: the face detector should find the published faces"
    else:
        assert sum(faces) == 0, [e["event_id"] for e, f in zip(with_images, faces, strict=True) if f]
        assert all("crop_jpeg_base64" not in e for e in face_events if e["region_kinds"] == ["face"])


def test_outbox_file_is_private(tmp_path: Path) -> None:
    """Queued events hold lesion photos: the outbox must not be readable by other local users."""
    ob = Outbox(tmp_path / "o.sqlite3")
    ob.put("t", b"x")
    mode = (tmp_path / "o.sqlite3").stat().st_mode & 0o777
    ob.close()
    assert mode & 0o077 == 0, oct(mode)
