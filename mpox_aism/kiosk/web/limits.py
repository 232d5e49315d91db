"""Load shedding for the diagnosis API: rates per client and in total, a short queue, token guessing.

The camera is the kiosk's main job and the API shares its two CPU cores, so the API's work is
bounded, not queued without end: beyond ``max_rps`` (all clients) or ``max_rps_per_client`` a request
is answered ``429`` with ``Retry-After`` at once; beyond ``concurrent`` running plus ``queue`` waiting
it is ``503`` with ``Retry-After``. A client that sends ``max_failed_auth`` wrong tokens within
``auth_window_s`` is refused (429) for ``auth_lockout_s``: a brute force of the token gets a few
guesses a minute. Clients are told apart by their address (behind a reverse proxy, configure the
proxy to limit instead). Everything here runs on the server's event loop, one thread.

A client that comes back before the time it was given (it ignores ``Retry-After``: a buggy or hostile
client) is refused again without a look at the buckets, and its refusal is *held* until that time
(``Refused.hold_s``, at most ``MAX_HOLD_S``; the gate sleeps, which costs nothing, within
``max_held``): however fast it sends,
it gets about one answer per wait it was given. Without the hold, twenty such clients were refused 460 times a
second, and the refusals and the clients' own loops took the camera's CPU (issue 28, docs/RESULTS.md).
A client that honours ``Retry-After`` (whole seconds, rounded up) never arrives early. Holding it for the
whole seconds it was told instead cut the refusals by 4× more but did not help the camera (RESULTS).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mpox_aism.kiosk.config import ApiLimits

MAX_CLIENTS = 4096  # remembered clients; the least recently seen are forgotten first
MAX_HOLD_S = 5.0  # the longest an early client's refusal is held


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def take(self, now: float) -> float:
        """0 when a request may go now (a token is used), else the seconds until one may."""
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Lockout:
    """Failures per key in a sliding window; ``max_failures`` of them lock the key out for ``lockout_s``.

    One mechanism for wrong API tokens (keyed by address) and wrong staff passwords (by name and by
    address). Both tables are bounded: the least recently seen keys are forgotten first.
    """

    def __init__(self, max_failures: int, window_s: float, lockout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.lockout_s, self.clock = max_failures, window_s, lockout_s, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked: OrderedDict[str, float] = OrderedDict()

    def wait(self, *keys: str) -> float:
        """Seconds until every key may try again (0: they may now)."""
        now, waits = self.clock(), [0.0]
        for k in keys:
            until = self._locked.get(k)
            if until is not None and now >= until:
                del self._locked[k]
            elif until is not None:
                waits.append(until - now)
        return max(waits)

    def failed(self, *keys: str) -> list[str]:
        """Count a failure for each key; the keys this failure locked out (for the audit trail)."""
        now, locked = self.clock(), []
        for k in keys:
            times = self._failures.setdefault(k, deque())
            self._failures.move_to_end(k)
            times.append(now)
            while times and times[0] < now - self.window_s:
                times.popleft()
            if len(times) >= self.max_failures:
                self._locked[k] = now + self.lockout_s
                self._locked.move_to_end(k)
                times.clear()
                locked.append(k)
        for table in (self._failures, self._locked):
            while len(table) > MAX_CLIENTS:
                table.popitem(last=False)
        return locked

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._failures.pop(k, None)


class Refused(Exception):
    """``hold_s``: how long the answer is held back before it is sent (a client that came back too early)."""

    def __init__(self, status: int, detail: str, retry_after_s: float, hold_s: float = 0.0) -> None:
        super().__init__(detail)
        self.status, self.detail, self.hold_s, self.wait_s = status, detail, hold_s, retry_after_s
        self.retry_after = str(max(1, math.ceil(retry_after_s)))


class Limiter:
    def __init__(self, limits: ApiLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        self._total = TokenBucket(limits.max_rps, max(float(limits.burst), limits.max_rps))
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self.tokens = Lockout(limits.max_failed_auth, limits.auth_window_s, limits.auth_lockout_s, clock)
        self.in_flight = 0
        self._not_before: OrderedDict[str, float] = OrderedDict()  # client → when it was told it may ask again

    def check_locked(self, client: str) -> None:
        wait = self.tokens.wait(client)
        if wait > 0:
            raise Refused(429, "too many wrong tokens from this address; try again later", wait)

    def auth_failed(self, client: str) -> None:
        self.tokens.failed(client)

    def admit(self, client: str) -> None:
        """Rate and queue checks for an authenticated request; the caller must ``release`` after."""
        now = self.clock()
        early = self._not_before.get(client, now) - now
        if early > 0:  # told to wait, and did not: held, and never let through early
            hold = min(early, MAX_HOLD_S)  # its Retry-After: what is left of the wait once the answer goes out
            raise Refused(429, "asked again before Retry-After had passed", early - hold, hold_s=hold)
        self._not_before.pop(client, None)
        try:
            self._admit(client, now)
        except Refused as r:
            self._not_before[client] = now + r.wait_s
            if len(self._not_before) > MAX_CLIENTS:
                self._not_before.popitem(last=False)
            raise

    def _admit(self, client: str, now: float) -> None:
        lim = self.limits
        bucket = self._clients.get(client)
        if bucket is None:
            bucket = self._clients[client] = TokenBucket(lim.max_rps_per_client, lim.burst)
            if len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        self._clients.move_to_end(client)
        wait = bucket.take(now)
        if wait:
            raise Refused(429, f"over {lim.max_rps_per_client:g} diagnoses per second from this address", wait)
        wait = self._total.take(now)
        if wait:
            raise Refused(429, f"the kiosk takes at most {lim.max_rps:g} diagnoses per second", wait)
        if self.in_flight >= lim.concurrent + lim.queue:
            raise Refused(503, "the kiosk is busy; try again shortly", 1.0)
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
