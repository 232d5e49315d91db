"""The diagnosis API over real HTTP: uvicorn on a loopback port in a thread, the shipped model (onnxruntime)
and the real Grad-CAM explainer, real skin photos from ../shared/data (skipped when absent).

No timing asserts: the machine is shared; every wait has a generous timeout instead.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")
pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi uvicorn python-multipart")

from mpox_aism.inference.service import BatchRecord  # noqa: E402
from mpox_aism.kiosk.metrics import KioskMetrics  # noqa: E402
from mpox_aism.kiosk.web.app import create_app  # noqa: E402
from mpox_aism.kiosk.web.server import ServerThread  # noqa: E402
from tests.conftest import SKIN8, default_model_or_skip, need_skin8, skin_coloured_tiles  # noqa: E402

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = httpx.Timeout(180.0)  # two shared cores: Grad-CAM under load can be slow, never wrong


def photo(label: str, i: int = 0) -> tuple[str, bytes]:
    need_skin8()
    files = sorted(p for p in (SKIN8 / label).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) <= i:
        pytest.skip(f"fewer than {i + 1} photos in {SKIN8 / label}")
    return files[i].name, files[i].read_bytes()


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width×height zero pixels: ~50 kB on disk for 20000², 1.2 GB as BGR."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    d = default_model_or_skip()
    if not (d / "model.onnx").is_file():
        pytest.skip(f"no model.onnx in {d}; make it with `mpox-aism export onnx`")
    return d


@pytest.fixture(scope="module")
def classifier(model_dir: Path) -> Iterator[Any]:
    from mpox_aism.inference.backends import load_classifier

    with load_classifier("onnxruntime", model_dir) as c:
        yield c


@pytest.fixture(scope="module")
def explainer(classifier: Any, model_dir: Path) -> Any:
    from mpox_aism.inference.explainer import ExplainerService
    from mpox_aism.inference.gradcam import GradCamExplainer

    return ExplainerService(classifier, gradcam=GradCamExplainer(model_dir))


@pytest.fixture(scope="module")
def status() -> dict[str, Any]:
    return {"broker": "connected", "cameras": {"gate1": "running"}}


@pytest.fixture(scope="module")
def server(classifier: Any, explainer: Any, status: dict[str, Any]) -> Iterator[ServerThread]:
    app = create_app(classifier=classifier, explainer=explainer, token=TOKEN, status_provider=lambda: dict(status),
                     metrics=KioskMetrics())
    with ServerThread(app) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def small_client(classifier: Any) -> Iterator[httpx.Client]:
    """A server that accepts at most 100 kB and no explainer."""
    app = create_app(classifier=classifier, token=TOKEN, max_upload_bytes=100_000)
    with ServerThread(app) as s, httpx.Client(base_url=s.url, timeout=TIMEOUT) as c:
        yield c


def upload(client: httpx.Client, name: str, data: bytes, headers: dict[str, str] | None = AUTH,
           ctype: str = "image/jpeg") -> httpx.Response:
    return client.post("/v1/diagnose", files={"image": (name, data, ctype)}, headers=headers)


def check_diagnosis(body: dict[str, Any], classifier: Any, *, explained: bool = True) -> None:
    labels = list(classifier.labels)
    assert set(body) >= {"label", "probability", "decision", "threshold", "probabilities", "model_version",
                         "research_use_only"}
    assert list(body["probabilities"]) == labels
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert body["probability"] == pytest.approx(body["probabilities"][body["label"]])
    assert body["threshold"] == pytest.approx(classifier.meta.threshold)
    assert body["model_version"] == classifier.meta.model_version
    assert body["research_use_only"] is True
    if body.get("reason") == "unfamiliar":  # failed a photo check or unlike the training photos: says which
        assert body["decision"] == "review" and body["detail"]
    elif body["probability"] < body["threshold"]:
        assert body["decision"] == "review" and body["reason"] == "low_confidence"
    else:  # clear is healthy skin only; another disease is other_condition, never clear
        assert "reason" not in body
        assert body["decision"] == {"mpox": "suspected", "normal": "clear"}.get(body["label"], "other_condition")
    if explained:
        import cv2

        png = base64.b64decode(body["gradcam_png_base64"], validate=True)
        assert png.startswith(b"\x89PNG")
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.ndim == 3 and 0 < max(img.shape[:2]) <= 512
    else:
        assert "gradcam_png_base64" not in body


@pytest.mark.parametrize("label", ["mpox", "normal"])
def test_diagnose_real_photo(client: httpx.Client, classifier: Any, label: str) -> None:
    name, data = photo(label)
    r = upload(client, name, data)
    assert r.status_code == 200, r.text
    body = r.json()
    check_diagnosis(body, classifier)
    # the API answers what the classifier says about the same decoded photo
    from mpox_aism.contracts.images import load_rgb

    expected = classifier.predict([load_rgb(SKIN8 / label / name)])[0]
    assert np.allclose([body["probabilities"][k] for k in classifier.labels], expected, atol=1e-5)


def _png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def non_skin_images() -> dict[str, tuple[np.ndarray, str]]:
    """Images that are obviously not a photo of skin, and what should give them away."""
    rng = np.random.default_rng(0)
    tiles = skin_coloured_tiles()  # passes every photo check
    return {"grey": (np.full((300, 300, 3), 128, np.uint8), "too blurred"),
            "black": (np.zeros((300, 300, 3), np.uint8), "too dark"),
            "white": (np.full((300, 300, 3), 255, np.uint8), "too blurred"),
            "noise": (rng.integers(0, 256, (300, 300, 3), dtype=np.uint8), "noise"),
            "skin-coloured tiles": (tiles, "unlike the photos the model was trained on")}


def test_an_obvious_non_skin_image_is_review_unfamiliar(client: httpx.Client, classifier: Any) -> None:
    """The model answers anything (noise scores 'normal' at 85 %); the photo checks and the familiarity score
    send such an image to a person, saying why, with the model's label kept as its guess."""
    if classifier.familiarity is None:
        pytest.skip("the default model has no familiarity score")
    for name, (rgb, why) in non_skin_images().items():
        r = upload(client, f"{name}.png", _png(rgb), ctype="image/png")
        assert r.status_code == 200, r.text
        body = r.json()
        check_diagnosis(body, classifier)
        assert body["decision"] == "review" and body["reason"] == "unfamiliar", (name, body["decision"])
        assert why in body["detail"], (name, body["detail"])
        assert body["label"] in classifier.labels and body["unfamiliarity"] is not None


def test_auth_missing_wrong_or_other_scheme(client: httpx.Client) -> None:
    name, data = photo("normal")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        r = upload(client, name, data, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["detail"]


def test_no_token_configured_disables_the_api(classifier: Any) -> None:
    for token in (None, ""):
        app = create_app(classifier=classifier, token=token)
        with ServerThread(app) as s, httpx.Client(base_url=s.url, timeout=TIMEOUT) as c:
            r = c.post("/v1/diagnose", files={"image": ("x.jpg", b"x", "image/jpeg")},
                       headers={"Authorization": "Bearer x"})
            assert r.status_code == 503, r.text


def test_rejects_what_is_not_a_whole_image(client: httpx.Client) -> None:
    name, data = photo("mpox")
    cases: list[tuple[str, dict[str, Any], set[int]]] = [
        ("text file", {"files": {"image": ("notes.txt", b"not an image at all\n" * 50, "text/plain")}}, {415}),
        ("truncated JPEG", {"files": {"image": (name, data[: int(len(data) * 0.3)], "image/jpeg")}}, {400}),
        ("empty file", {"files": {"image": ("empty.jpg", b"", "image/jpeg")}}, {400}),
        ("JPEG header only", {"files": {"image": ("h.jpg", data[:200], "image/jpeg")}}, {400, 415}),
        ("wrong field", {"files": {"photo": (name, data, "image/jpeg")}}, {400}),
        ("not multipart", {"content": data, "headers": {"Content-Type": "image/jpeg"}}, {415}),
    ]
    for what, kwargs, statuses in cases:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        r = client.post("/v1/diagnose", headers=headers, **kwargs)
        assert r.status_code in statuses, (what, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str) and r.json()["detail"], what


def test_oversized_upload_is_413(small_client: httpx.Client) -> None:
    big = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    r = upload(small_client, "big.jpg", big)  # Content-Length declared: refused before the body is parsed
    assert r.status_code == 413, r.text
    assert "100000" in r.json()["detail"]

    boundary = "kioskboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(body), 16_384):
            yield body[i:i + 16_384]

    r = small_client.post("/v1/diagnose", content=chunks(),
                          headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    # the server is still fine afterwards, and a photo under the limit is answered
    name, data = photo("normal")
    assert len(data) < 100_000
    r = upload(small_client, name, data)
    assert r.status_code == 200, r.text
    assert "gradcam_png_base64" not in r.json()


@pytest.mark.parametrize("size", [(20_000, 20_000), (8_000, 8_000)], ids=["400MP", "64MP"])
def test_decompression_bomb_refused_from_the_header(client: httpx.Client, size: tuple[int, int]) -> None:
    bomb = png_header_bomb(*size)
    assert len(bomb) < 200_000  # small on the wire, huge once decoded
    r = upload(client, "bomb.png", bomb, ctype="image/png")
    assert r.status_code in (400, 413), r.text
    assert "pixels" in r.json()["detail"]


def test_healthz_ok_then_degraded(client: httpx.Client, status: dict[str, Any]) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["broker"] == "connected" and r.json()["model_version"]
    status.update(broker="disconnected", down=["broker"])
    try:
        r = client.get("/healthz")
        assert r.status_code == 200  # degraded, still serving
        assert r.json()["status"] == "degraded" and r.json()["down"] == ["broker"]
    finally:
        status.update(broker="connected", down=[])


def test_metrics_count_diagnose_requests(client: httpx.Client) -> None:
    upload(client, "x.jpg", b"", headers={})  # one 401 at least
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'mpox_aism_diagnose_requests_total{status="401"}' in text
    assert "mpox_aism_outbox_dropped_total" in text and "mpox_aism_decisions_total" in text
    assert 'mpox_aism_review_reasons_total{reason="unfamiliar"} 0.0' in text  # every reason, from the start
    assert 'mpox_aism_decisions_total{state="other_condition"} 0.0' in text


def test_openapi_documents_the_diagnose_endpoint(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/diagnose"]["post"]
    schema = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["image"] and schema["properties"]["image"]["format"] == "binary"
    assert {"200", "400", "401", "413", "415"} <= set(op["responses"])
    assert op["security"] == [{"HTTPBearer": []}]
    diagnosis = spec["components"]["schemas"]["Diagnosis"]
    assert {"label", "probability", "decision", "probabilities", "gradcam_png_base64"} <= set(diagnosis["properties"])
    assert client.get("/docs").status_code == 200


def test_parallel_uploads_all_answered(client: httpx.Client, classifier: Any) -> None:
    photos = [photo("mpox", 1), photo("normal", 1), photo("chickenpox"), photo("eczema")]
    health: list[int] = []
    started = threading.Event()

    def one(item: tuple[str, bytes]) -> httpx.Response:
        started.set()
        return upload(client, *item)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, p) for p in photos]
        started.wait(30)
        health.append(client.get("/healthz").status_code)  # the event loop still serves while they run
        responses = [f.result() for f in futures]
    assert health == [200]
    for r in responses:
        assert r.status_code == 200, r.text
        check_diagnosis(r.json(), classifier)


def test_metrics_class_exposition() -> None:
    m = KioskMetrics()
    m.frame("gate1", 3)
    m.set_fps("gate1", 12.5)
    m.dropped_frame("gate1", 2)
    m.inference_batch(BatchRecord(crops=6, requests=3, clients=2, seconds=0.02, waited_s=0.004, failed=1))
    m.detection("face")
    m.decision("review")
    m.set_outbox({"depth": 4, "dropped": 7, "oldest_age_s": 1.0})
    m.set_broker_connected(True)
    m.diagnose_request(200)
    text = m.exposition().decode()
    for line in ('mpox_aism_frames_total{camera="gate1"} 3.0', 'mpox_aism_fps{camera="gate1"} 12.5',
                 'mpox_aism_dropped_frames_total{camera="gate1"} 2.0', "mpox_aism_inference_seconds_count 1.0",
                 "mpox_aism_inference_batch_crops_sum 6.0", "mpox_aism_inference_failures_total 1.0",
                 'mpox_aism_detections_total{kind="face"} 1.0', 'mpox_aism_decisions_total{state="review"} 1.0',
                 'mpox_aism_decisions_total{state="suspected"} 0.0', "mpox_aism_outbox_depth 4.0",
                 "mpox_aism_outbox_dropped_total 7.0", "mpox_aism_broker_connected 1.0",
                 'mpox_aism_diagnose_requests_total{status="200"} 1.0'):
        assert line in text, line
    assert "# TYPE mpox_aism_outbox_dropped_total counter" in text or "# TYPE mpox_aism_outbox_dropped counter" in text
    json.dumps(text)  # plain text, no surprises


def test_explainer_factory_built_once_and_failure_leaves_the_answer(classifier: Any) -> None:
    built: list[int] = []

    class Broken:
        def explain(self, crop_rgb: np.ndarray, target: int | None = None) -> Any:
            raise RuntimeError("no gradients today")

    def factory() -> Broken:
        built.append(1)
        return Broken()

    # the Grad-CAM path: a classifier whose model gives no class maps (ViT, Swin…) needs the explainer
    plain = copy.copy(classifier)
    plain.can_explain = False
    from mpox_aism.inference.explainer import ExplainerService

    app = create_app(classifier=plain, explainer=ExplainerService(plain, gradcam=factory), token=TOKEN)
    name, data = photo("normal")
    with ServerThread(app) as s, httpx.Client(base_url=s.url, timeout=TIMEOUT) as c:
        for _ in range(2):
            r = upload(c, name, data)
            assert r.status_code == 200, r.text
            check_diagnosis(r.json(), classifier, explained=False)
    assert built == [1]
