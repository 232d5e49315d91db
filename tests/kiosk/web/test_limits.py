"""The diagnosis API sheds load instead of queueing it: rates, the queue and token guessing are bounded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")

from mpox_aism.kiosk.config import ApiLimits  # noqa: E402
from mpox_aism.kiosk.web.limits import MAX_HOLD_S, Limiter, Refused  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_per_client_rate_and_burst() -> None:
    clock = Clock()
    lim = Limiter(ApiLimits(max_rps=100, max_rps_per_client=2, burst=2, queue=100), clock)
    lim.admit("a"), lim.admit("a")  # the burst
    with pytest.raises(Refused) as refused:
        lim.admit("a")
    assert refused.value.status == 429 and refused.value.retry_after == "1"
    lim.admit("b")  # another client has its own bucket
    clock.t += 0.5  # 2/s: one token back
    lim.admit("a")


def test_total_rate_over_all_clients() -> None:
    clock = Clock()
    lim = Limiter(ApiLimits(max_rps=1, max_rps_per_client=10, burst=1, queue=100), clock)
    lim.admit("a")
    with pytest.raises(Refused, match="at most 1 diagnoses per second") as refused:
        lim.admit("b")
    assert refused.value.status == 429


def test_a_full_queue_is_503_until_a_slot_frees() -> None:
    clock = Clock()
    lim = Limiter(ApiLimits(max_rps=100, max_rps_per_client=100, burst=100, concurrent=1, queue=1), clock)
    lim.admit("a"), lim.admit("b")
    with pytest.raises(Refused) as refused:
        lim.admit("c")
    assert refused.value.status == 503 and refused.value.retry_after == "1"
    lim.release()
    lim.admit("d")
    lim.release()
    clock.t += 1  # "c" was told to come back in a second
    lim.admit("c")


def test_a_client_that_ignores_retry_after_is_held_and_never_let_through_early() -> None:
    clock = Clock()
    lim = Limiter(ApiLimits(max_rps=100, max_rps_per_client=2, burst=1, queue=100), clock)
    lim.admit("a")
    with pytest.raises(Refused) as first:
        lim.admit("a")
    assert first.value.hold_s == 0 and first.value.wait_s == pytest.approx(0.5)  # its token is back in 0.5 s
    clock.t += 0.2
    with pytest.raises(Refused, match="before Retry-After") as early:
        lim.admit("a")  # 0.3 s early: refused without a look at the buckets, its answer held that long
    assert early.value.hold_s == pytest.approx(0.3) and early.value.status == 429
    assert early.value.wait_s == pytest.approx(0)  # its Retry-After: what is left once the held answer goes
    lim.admit("b")  # other clients are not affected
    clock.t += 0.3
    lim.admit("a")  # on time: admitted


def test_wrong_tokens_lock_the_address_out_for_a_while() -> None:
    clock = Clock()
    lim = Limiter(ApiLimits(max_failed_auth=3, auth_window_s=60, auth_lockout_s=300), clock)
    for _ in range(2):
        lim.auth_failed("x")
        lim.check_locked("x")  # not yet
    lim.auth_failed("x")
    with pytest.raises(Refused) as refused:
        lim.check_locked("x")
    assert refused.value.status == 429 and int(refused.value.retry_after) == 300
    lim.check_locked("y")  # others are not affected
    clock.t += 301
    lim.check_locked("x")  # the lock-out ends


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    lim = Limiter(ApiLimits(max_failed_auth=2, auth_window_s=10), clock)
    lim.auth_failed("x")
    clock.t += 11
    lim.auth_failed("x")
    lim.check_locked("x")


# ---------------------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def classifier() -> Iterator[Any]:
    from mpox_aism.inference.backends import load_classifier
    from tests.conftest import default_model_or_skip

    with load_classifier("onnxruntime", default_model_or_skip()) as clf:
        yield clf


@pytest.fixture(scope="module")
def limited(classifier: Any) -> Iterator[httpx.Client]:
    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread
    from tests.kiosk.web.test_api import TIMEOUT, TOKEN

    limits = ApiLimits(max_rps=50, max_rps_per_client=0.2, burst=1, max_failed_auth=2, auth_lockout_s=300)
    app = create_app(classifier=classifier, token=TOKEN, limits=limits)
    with ServerThread(app) as s, httpx.Client(base_url=s.url, timeout=TIMEOUT) as c:
        yield c


def test_over_http_the_second_quick_request_is_429_with_retry_after(limited: httpx.Client) -> None:
    from tests.kiosk.web.test_api import photo, upload

    name, data = photo("mpox")
    assert upload(limited, name, data).status_code == 200
    r = upload(limited, name, data)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
    assert "per second" in r.json()["detail"]


def test_over_http_token_guessing_is_locked_out(limited: httpx.Client) -> None:
    from tests.kiosk.web.test_api import AUTH, photo, upload

    name, data = photo("normal")
    for _ in range(2):
        assert upload(limited, name, data, headers={"Authorization": "Bearer guess"}).status_code == 401
    r = upload(limited, name, data, headers=AUTH)  # even the right token, from this address, for a while
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 60 and "wrong tokens" in r.json()["detail"]


def test_openapi_declares_the_shedding_answers(limited: httpx.Client) -> None:
    responses = limited.get("/openapi.json").json()["paths"]["/v1/diagnose"]["post"]["responses"]
    for status in ("429", "503"):
        assert "Retry-After" in responses[status]["headers"], status


def test_a_long_wait_is_held_at_most_max_hold_and_says_what_is_left() -> None:
    clock = Clock()
    lim = Limiter(ApiLimits(max_rps=100, max_rps_per_client=0.01, burst=1, queue=100), clock)
    lim.admit("a")
    with pytest.raises(Refused):
        lim.admit("a")  # told: 100 s
    with pytest.raises(Refused) as early:
        lim.admit("a")
    assert early.value.hold_s == pytest.approx(MAX_HOLD_S)
    assert early.value.retry_after == str(100 - int(MAX_HOLD_S))


def test_held_refusals_stay_under_the_connection_bound() -> None:
    from pydantic import ValidationError

    from mpox_aism.kiosk.config import HttpConfig

    HttpConfig(max_connections=64, limits={"max_held": 32})
    with pytest.raises(ValidationError, match="max_held"):
        HttpConfig(max_connections=8, limits={"max_held": 32})
