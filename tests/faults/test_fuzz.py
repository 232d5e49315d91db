"""Fuzzing the kiosk's two doors for untrusted input: the diagnosis API and the config file.

The upload fuzz sends 1,000 generated requests (hypothesis, derandomized so CI runs the same cases) to
the real app served by uvicorn on loopback, with the shipped model behind it: mutated, truncated,
spliced and random photos, every accepted and refused image format, header bombs, wrong tokens, wrong
fields and content types. Each answer is checked **against the app's own OpenAPI document**: its status
must be one the spec declares for the operation (never a 5xx), and its JSON body must validate against
the schema the spec gives for that status. Afterwards the server must still answer ``/healthz`` and a
real photo. The seed photos are the built-in sample (scikit-image / matplotlib), so no ``../shared``
is needed.

The config fuzz mutates ``configs/kiosk.yaml`` (delete, retype, rename, add keys) and feeds random
YAML text: every outcome is a valid config or a ``ConfigError`` naming where, never another exception.
"""

from __future__ import annotations

import copy
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed: pip install -e .[dev]")
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed: pip install -e .[dev]")
httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install -e .[dev]")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mpox_aism.kiosk.config import ConfigError, KioskConfig, load_config, parse_config  # noqa: E402
from tests.conftest import REPO, default_model_or_skip  # noqa: E402

pytestmark = pytest.mark.faults

TOKEN = "fuzz-token"
UPLOAD_CASES = 1000
CONFIG_CASES = 1000
MAX_UPLOAD = 300_000  # small, so that generated uploads also cross the byte limit
MAX_PIXELS = 4_000_000
SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


# ------------------------------------------------------------------------------------------ seeds
def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def _seed_photos() -> list[bytes]:
    """The built-in sample photos, small, in the four accepted formats."""
    import cv2

    from mpox_aism.contracts.sample import _photos

    out = []
    for bgr in _photos().values():
        rgb = cv2.cvtColor(cv2.resize(bgr, (160, 160), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        out += [_encode(rgb, f) for f in ("JPEG", "PNG", "WEBP", "BMP")]
    return out


SEEDS = _seed_photos()


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """Bytes that are, were, or pretend to be an image."""
    kind = draw(st.sampled_from(["seed", "flip", "truncate", "splice", "insert", "generated", "bomb", "random",
                                 "empty", "header"]))
    seed = draw(st.sampled_from(SEEDS))
    if kind == "seed":
        return seed
    if kind == "flip":  # a few corrupted bytes anywhere
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "truncate":
        return seed[: draw(st.integers(1, len(seed) - 1))]
    if kind == "splice":  # the start of one photo, the end of another
        other = draw(st.sampled_from(SEEDS))
        return seed[: draw(st.integers(0, len(seed)))] + other[draw(st.integers(0, len(other))):]
    if kind == "insert":
        at = draw(st.integers(0, len(seed)))
        return seed[:at] + draw(st.binary(min_size=1, max_size=64)) + seed[at:]
    if kind == "generated":  # a valid image of odd shape/mode, in any format PIL writes
        h, w = draw(st.integers(1, 300)), draw(st.integers(1, 300))
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "1", "P", "I;16"]))
        fmt = draw(st.sampled_from(["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "ICO", "PPM", "TGA"]))
        from PIL import Image

        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        try:
            im.save(buf, format=fmt)
        except (OSError, ValueError, KeyError):  # that format cannot hold that mode: send it as RGB PNG
            im.convert("RGB").save(buf := io.BytesIO(), format="PNG")
        return buf.getvalue()
    if kind == "bomb":
        from tests.kiosk.web.test_api import png_header_bomb

        return png_header_bomb(draw(st.integers(1, 6000)), draw(st.integers(1, 6000)))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "empty":
        return b""
    return seed[: draw(st.integers(2, 64))]  # "header": magic bytes only


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client.post('/v1/diagnose', ...)`` plus a short description."""
    auth = draw(st.sampled_from(["ok"] * 6 + ["none", "wrong", "basic", "empty"]))
    headers = {"ok": {"Authorization": f"Bearer {TOKEN}"}, "none": {},
               "wrong": {"Authorization": "Bearer not-the-token"},
               "basic": {"Authorization": f"Basic {TOKEN}"}, "empty": {"Authorization": "Bearer"}}[auth]
    body = draw(image_bytes())
    if draw(st.integers(0, 19)) == 0:  # now and then, bigger than the limit
        body = body + bytes(MAX_UPLOAD + 1 - len(body)) if len(body) <= MAX_UPLOAD else body
    shape = draw(st.sampled_from(["multipart"] * 8 + ["raw", "extra-fields", "two-files"]))
    field = draw(st.sampled_from(["image"] * 8 + ["photo", "", "IMAGE"]))
    filename = draw(st.text(max_size=40).filter(lambda s: "\x00" not in s))
    ctype = draw(st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "text/plain", ""]))
    kwargs: dict[str, Any] = {"headers": headers}
    if shape == "raw":
        raw_type = draw(st.sampled_from(["image/jpeg", "multipart/form-data", "multipart/form-data; boundary=x",
                                         "application/json", "text/plain"]))
        kwargs["content"] = body
        kwargs["headers"] = {**headers, "Content-Type": raw_type}
    else:
        files: list[tuple[str, tuple[str, bytes, str]]] = [(field, (filename, body, ctype))]
        if shape == "two-files":
            files.append(("image", ("second.jpg", draw(st.sampled_from(SEEDS)), "image/jpeg")))
        kwargs["files"] = files
        if shape == "extra-fields":
            kwargs["data"] = draw(st.dictionaries(st.sampled_from(["a", "note", "image2", "x"]),
                                                  st.text(max_size=100), max_size=3))
    kwargs["_what"] = f"auth={auth} shape={shape} field={field!r} bytes={len(body)} head={body[:8]!r}"
    return kwargs


# ------------------------------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def api() -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    """The diagnosis app on loopback with the shipped model (no Grad-CAM: 1,000 cases on two cores)."""
    from mpox_aism.inference.backends import load_classifier
    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread

    model_dir = default_model_or_skip()
    if not (model_dir / "model.onnx").is_file():
        pytest.skip(f"no model.onnx in {model_dir}; make it with `mpox-aism export onnx`")
    with load_classifier("onnxruntime", model_dir) as classifier:
        app = create_app(classifier=classifier, token=TOKEN, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)
        spec = app.openapi()
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
            yield client, spec


def _validator(spec: dict[str, Any], status: int) -> Any:
    """A JSON-schema validator for the response the spec declares for POST /v1/diagnose at ``status``."""
    responses = spec["paths"]["/v1/diagnose"]["post"]["responses"]
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; give the $refs their components to resolve against
    root = {**schema, "components": spec["components"]}
    return jsonschema.Draft202012Validator(root)


def test_upload_fuzz_answers_only_what_the_openapi_spec_declares(api: tuple[httpx.Client, dict[str, Any]]) -> None:
    client, spec = api
    declared = {int(s) for s in spec["paths"]["/v1/diagnose"]["post"]["responses"]}
    seen: Counter[int] = Counter()

    @settings(max_examples=UPLOAD_CASES, **SETTINGS)
    @given(requests())
    def one(kwargs: dict[str, Any]) -> None:
        what = kwargs.pop("_what")
        r = client.post("/v1/diagnose", **kwargs)
        seen[r.status_code] += 1
        assert r.status_code in declared, \
            f"{what}: status {r.status_code} not in the spec {sorted(declared)}: {r.text[:300]}"
        assert r.headers.get("content-type", "").startswith("application/json"), what
        errors = sorted(_validator(spec, r.status_code).iter_errors(r.json()), key=str)
        assert not errors, f"{what}: {r.status_code} body does not match the spec: {errors[0].message}"
        if r.status_code == 200:
            assert abs(sum(r.json()["probabilities"].values()) - 1) < 1e-3, what
        else:
            assert isinstance(r.json()["detail"], str) and r.json()["detail"], what

    one()
    total = sum(seen.values())
    print(f"\nFAULT upload fuzz: {total} requests, statuses {dict(sorted(seen.items()))}, 5xx "
          f"{sum(n for s, n in seen.items() if s >= 500)}")
    assert total >= UPLOAD_CASES
    assert seen[200] > 50 and seen[400] and seen[401] and seen[413] and seen[415], seen  # every door exercised
    # still serving, and still right, after the fuzz
    assert client.get("/healthz").status_code == 200
    r = client.post("/v1/diagnose", files={"image": ("ok.jpg", SEEDS[0], "image/jpeg")},
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------ configs
BASE_CONFIG: dict[str, Any] = yaml.safe_load((REPO / "configs" / "kiosk.yaml").read_text())
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                       st.text(max_size=30), st.lists(st.integers(-5, 5), max_size=3),
                       st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
                       st.sampled_from(["rtsp://", "mqtt://", "mqtts://h:1", "/dev/video99", "-1", "∞", "", "0"]))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    cfg = copy.deepcopy(BASE_CONFIG)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(cfg)
        if not paths or not isinstance(cfg, dict):
            break
        path = draw(st.sampled_from(paths))
        parent = cfg
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = draw(st.sampled_from(["delete", "set", "set", "unknown", "rename"]))
        if op == "delete":
            del parent[key]
        elif op == "set":
            parent[key] = draw(ODD_VALUES)
        elif op == "unknown" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(ODD_VALUES)
        elif op == "rename" and isinstance(parent, dict):
            parent[str(key) + draw(st.sampled_from(["_", "s", "X"]))] = parent.pop(key)
    if draw(st.integers(0, 49)) == 0:
        return draw(ODD_VALUES)  # not even a mapping
    return cfg


def test_config_fuzz_is_valid_or_a_config_error_naming_where() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=CONFIG_CASES, **SETTINGS)
    @given(mutated_configs())
    def one(data: Any) -> None:
        try:
            cfg = parse_config(data, "fuzz.yaml")
        except ConfigError as e:
            outcomes["ConfigError"] += 1
            assert str(e).startswith("fuzz.yaml: ") and len(str(e)) > len("fuzz.yaml: "), str(e)
            return
        outcomes["valid"] += 1
        assert isinstance(cfg, KioskConfig)
        assert parse_config(cfg.model_dump(), "round-trip") == cfg  # what it accepts, it can re-read

    one()
    print(f"\nFAULT config fuzz: {sum(outcomes.values())} mutated configs → {dict(outcomes)}; other exceptions 0")
    assert outcomes["ConfigError"] > CONFIG_CASES // 4 and outcomes["valid"] > 0, outcomes


def test_config_fuzz_random_yaml_text(tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    path = tmp_path / "kiosk.yaml"
    base_text = (REPO / "configs" / "kiosk.yaml").read_text()

    @settings(max_examples=300, **SETTINGS)
    @given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                     st.tuples(st.integers(0, len(base_text)), st.text(max_size=20))))
    def one(content: Any) -> None:
        if isinstance(content, tuple):  # the real file with a few characters changed
            at, junk = content
            content = base_text[:at] + junk + base_text[at + len(junk):]
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
            outcomes["valid"] += 1
        except ConfigError as e:
            outcomes["ConfigError"] += 1
            assert str(e).startswith(str(path)), str(e)

    one()
    print(f"\nFAULT config text fuzz: {sum(outcomes.values())} files → {dict(outcomes)}; other exceptions 0")
    assert outcomes["ConfigError"] > 0
