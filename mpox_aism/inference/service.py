"""One inference worker per process: every camera's crops and the API's photos, one forward pass at a time.

Why: when each camera thread called the classifier itself, N threads ran the runtime's thread pool on the
same cores at once, and past four cameras the box did *less* work in total (issue 28: four cameras made
42 frames/s, eight 22). Here one worker thread owns the forward passes: crops that arrive close together
from different cameras go through in one batch (a batch of 8 costs far less than 8 batches of 1), and the
runtime's intra-op pool is the only pool that runs inference, sized once for the machine.

The rules, each with a test in ``tests/inference/test_service.py``:

- **Order**: each client's requests are answered in the order it made them (one FIFO per client).
- **Fairness**: a batch is filled round robin — one request from each client with work, in turn, starting
  after the client that went first last time — so neither a camera with many crops nor the diagnosis API
  under a flood can starve another client. The API is one client among the cameras.
- **Bounded wait**: after the first request arrives, the worker waits at most ``max_wait_ms`` for the
  other clients that may ask soon, and not at all when none may: a lone camera never waits. A full batch
  (``max_batch`` crops) goes at once. A client that says when it works (:meth:`InferenceClient.working`, a
  camera around each frame it has its turn for, ``pipeline.load.Turns``) is waited for only while it works:
  a camera waiting for its turn cannot ask. Any other client is waited for if it asked in the last
  ``ACTIVE_S`` seconds.
- **Failure**: a batch whose forward pass raises is run again one request at a time, so only the request
  that fails gets the exception (its camera counts that frame as failed); the other cameras are answered.
- **Shutdown**: :meth:`InferenceService.close` refuses new requests, answers every queued one, and joins
  the worker. A request made after it raises :class:`ServiceClosed`.

Callers preprocess their crops in their own threads (``preprocess_batch``); only the forward pass, the
softmax and the familiarity score run here. A heat-map request (:meth:`InferenceClient.explain`) is a
whole one-pass explanation run alone, in its client's turn.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpox_aism.contracts.heatmap import Explanation
from mpox_aism.contracts.preprocess import preprocess_batch
from mpox_aism.inference.classifier import Classification, Classifier

log = logging.getLogger(__name__)
MAX_WAIT_MS = 10.0  # what a camera may wait for others' crops: well under a frame at 30 fps
ACTIVE_S = 1.0  # a client that asked within this long is expected to ask again soon
RESULT_TIMEOUT_S = 120.0  # a caller gives up on an answer after this (a wedged runtime, not a slow one)


class ServiceClosed(RuntimeError):
    """The inference service was closed: no more requests are taken."""


@dataclass
class _Request:
    client: str
    future: Future
    batch: np.ndarray | None = None  # crops to classify (N×3×S×S), batched with others'
    call: Callable[[], Any] | None = None  # or a whole call (a heat map) run alone
    queued: float = field(default_factory=time.perf_counter)

    @property
    def crops(self) -> int:
        return 0 if self.batch is None else len(self.batch)


@dataclass(frozen=True)
class BatchRecord:
    """One forward pass of the worker, for metrics: how many crops from how many requests and clients, how
    long it ran, and how long its oldest request had waited in the queue."""

    crops: int
    requests: int
    clients: int
    seconds: float
    waited_s: float
    failed: int = 0  # requests answered with an error


@dataclass(frozen=True)
class ServiceStats:
    """Counters since start, a copy another thread may read."""

    batches: int = 0
    crops: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # per client
    failed: dict[str, int] = field(default_factory=dict)  # per client

    @property
    def crops_per_batch(self) -> float:
        return self.crops / self.batches if self.batches else 0.0


class InferenceService:
    """The process's one inference worker around ``classifier``. ``on_batch`` is called (in the worker
    thread) after every forward pass; it must be quick and never raise (metrics).

    Use :meth:`client` to get a classifier-like handle per caller; close the service after its callers
    have stopped (or use it as a context manager).
    """

    def __init__(self, classifier: Classifier, *, max_wait_ms: float = MAX_WAIT_MS, max_batch: int | None = None,
                 on_batch: Callable[[BatchRecord], None] | None = None) -> None:
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.classifier = classifier
        self.max_wait_s = max_wait_ms / 1000
        self.max_batch = max_batch or classifier.max_batch
        self.on_batch = on_batch
        self._queues: dict[str, deque[_Request]] = {}
        self._order: list[str] = []  # clients in the order they first asked: the round robin's ring
        self._next = 0  # where the next round starts in the ring
        self._last_seen: dict[str, float] = {}
        self._working: dict[str, int] = {}  # clients that say when they work → how many of their units run now
        self._cond = threading.Condition()
        self._closed = False
        self._batches = self._crops = 0
        self._requests: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ callers
    def client(self, name: str) -> InferenceClient:
        """A handle for one caller (a camera, the API, the event sink): its requests share one FIFO."""
        return InferenceClient(self, name)

    def submit_batch(self, client: str, batch: np.ndarray) -> Future:
        """Classify a preprocessed N×3×S×S batch; the future gives a :class:`Classification`."""
        return self._put(_Request(client, Future(), batch=batch))

    def submit_call(self, client: str, call: Callable[[], Any]) -> Future:
        """Run ``call`` (which uses the classifier) alone on the worker, in ``client``'s turn."""
        return self._put(_Request(client, Future(), call=call))

    @contextlib.contextmanager
    def working(self, client: str) -> Iterator[None]:
        """``client`` may ask during the block (and, from now on, only then): the worker waits for it only then."""
        with self._cond:
            self._working[client] = self._working.get(client, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._working[client] -= 1
                self._cond.notify_all()  # a worker waiting for this client's crops need not wait any more

    def _put(self, req: _Request) -> Future:
        with self._cond:
            if self._closed:
                raise ServiceClosed("the inference service is closed")
            if req.client not in self._queues:
                self._queues[req.client] = deque()
                self._order.append(req.client)
            self._queues[req.client].append(req)
            self._last_seen[req.client] = time.monotonic()
            self._requests[req.client] = self._requests.get(req.client, 0) + 1
            self._cond.notify_all()
        return req.future

    def stats(self) -> ServiceStats:
        with self._cond:
            return ServiceStats(self._batches, self._crops, dict(self._requests), dict(self._failed))

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new requests, answer the queued ones, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> InferenceService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ the worker
    def _pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _should_wait(self) -> bool:
        """May another client still ask (it works now, or asked recently), and is there room left in the batch?"""
        now = time.monotonic()

        def may_ask(c: str) -> bool:
            working = self._working.get(c)
            return working > 0 if working is not None else now - self._last_seen[c] < ACTIVE_S

        waiting_for = [c for c, q in self._queues.items() if not q and may_ask(c)]
        queued = sum(r.crops or self.max_batch for q in self._queues.values() for r in q)
        return bool(waiting_for) and queued < self.max_batch

    def _take(self) -> list[_Request]:
        """The next batch, round robin from ``self._next``: crop requests up to ``max_batch`` crops, or one
        call on its own. A request larger than the batch goes alone (the classifier chunks it)."""
        taken: list[_Request] = []
        crops, n, start = 0, len(self._order), self._next
        progress = True
        while progress:  # a second pass takes a client's next request when the batch has room
            progress = False
            for i in range(n):
                name = self._order[(start + i) % n]
                q = self._queues[name]
                if not q:
                    continue
                head = q[0]
                if head.call is not None:
                    if taken:
                        continue  # a call runs alone: it waits for the next round, first in line
                    self._next = (start + i + 1) % n
                    return [q.popleft()]
                if taken and crops + head.crops > self.max_batch:
                    continue
                if not taken:
                    self._next = (start + i + 1) % n  # the next round starts after the client served first
                taken.append(q.popleft())
                crops += head.crops
                progress = True
                if crops >= self.max_batch:
                    return taken
        return taken

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending() and not self._closed:
                    self._cond.wait()
                if not self._pending():  # closed and drained
                    return
                deadline = time.monotonic() + self.max_wait_s
                while not self._closed and self._should_wait():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._take()
            try:
                self._serve(batch)
            except BaseException as e:  # a bug here must not leave a caller waiting forever
                log.exception("inference service: serving a batch failed")
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)

    def _serve(self, batch: list[_Request]) -> None:
        t0 = time.perf_counter()
        waited = t0 - min(r.queued for r in batch)
        failed = 0
        if batch[0].call is not None:
            failed += not self._answer(batch[0], batch[0].call)
        else:
            try:
                joined = batch[0].batch if len(batch) == 1 else np.concatenate([r.batch for r in batch])  # type: ignore[misc]
                result = self.classifier.classify_preprocessed(joined)  # type: ignore[arg-type]
            except Exception as e:
                log.warning("inference batch of %d request(s) failed (%s: %s): each is tried alone", len(batch),
                            type(e).__name__, e)
                for r in batch:
                    failed += not self._answer(r, lambda r=r: self.classifier.classify_preprocessed(r.batch))
            else:
                start = 0
                for r in batch:
                    r.future.set_result(_slice(result, start, start + r.crops))
                    start += r.crops
        seconds = time.perf_counter() - t0
        with self._cond:
            self._batches += 1
            self._crops += sum(r.crops for r in batch)
        if self.on_batch is not None:
            try:
                self.on_batch(BatchRecord(sum(r.crops for r in batch), len(batch), len({r.client for r in batch}),
                                          seconds, waited, failed))
            except Exception:  # metrics must never cost an answer
                log.debug("inference on_batch callback failed", exc_info=True)

    def _answer(self, req: _Request, fn: Callable[[], Any]) -> bool:
        try:
            req.future.set_result(fn())
            return True
        except Exception as e:
            with self._cond:
                self._failed[req.client] = self._failed.get(req.client, 0) + 1
            req.future.set_exception(e)
            return False


def _slice(c: Classification, a: int, b: int) -> Classification:
    return Classification(c.probabilities[a:b], None if c.unfamiliarity is None else c.unfamiliarity[a:b],
                          c.threshold)


class InferenceClient:
    """What a camera's pipeline, the event sink or the diagnosis API holds instead of the classifier: the same
    ``classify`` / ``predict`` / ``explain`` and model facts, answered by the shared worker. Preprocessing
    runs in the caller's thread."""

    def __init__(self, service: InferenceService, name: str) -> None:
        self.service, self.name = service, name
        c = service.classifier
        self.meta, self.familiarity = c.meta, c.familiarity
        self.can_explain, self.has_features = c.can_explain, c.has_features
        self.backend = c.backend

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    @property
    def image_size(self) -> int:
        return self.meta.image_size

    def working(self) -> contextlib.AbstractContextManager[None]:
        """Around each unit of work (a camera's frame): the worker waits for this client's crops only then."""
        return self.service.working(self.name)

    def classify(self, crops: Sequence[np.ndarray]) -> Classification:
        batch = preprocess_batch(list(crops), self.image_size)
        if len(batch) == 0:
            return self.service.classifier.classify_preprocessed(batch)  # no forward pass: nothing to queue
        return self.service.submit_batch(self.name, batch).result(RESULT_TIMEOUT_S)

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.classify(crops).probabilities

    def explain(self, crop: np.ndarray, target: int | None = None, *, max_side: int | None = None) -> Explanation:
        call = self.service.classifier.explain
        return self.service.submit_call(self.name, lambda: call(crop, target, max_side=max_side)).result(
            RESULT_TIMEOUT_S)
