"""The console's MQTT side: a persistent session, and a PUBACK only after the commit.

Why each rule:

- **Persistent session** (MQTT v5, ``clean_start=False``, a session expiry, a fixed client id, QoS 1
  subscriptions): while the console is down or restarting, the broker queues every event for it. A
  kiosk deletes an alert from its outbox at the broker's PUBACK, so from then on the broker's queue for
  the console is the only copy; without a session the broker would discard what arrived while the
  console was away. (The broker must allow that queue to grow: mosquitto's ``max_queued_messages``
  defaults to 1000 per client and drops beyond it.)
- **Acknowledge after commit** (``manual_ack=True``): paho would otherwise PUBACK as soon as
  ``on_message`` returns, and a crash between that PUBACK and the SQLite commit loses the alert. Here
  ``on_message`` only queues the message; the writer thread commits a batch (one fsync), then
  acknowledges each message, in arrival order (MQTT requires PUBACKs in the order of the PUBLISHes).
  A crash before the commit: the broker re-delivers (the store de-duplicates by ``event_id``).
- **Acknowledge only on the connection that delivered it**: packet ids are per connection; a PUBACK
  for an old connection's message sent on a new one could acknowledge a *different* message the
  broker gave that id, before it is committed. Each delivery carries the connection's generation, bumped
  under ``_ack_lock`` on every connect and disconnect; a stale one is committed but not acknowledged,
  and the broker's re-delivery on the new connection is then a counted duplicate, acknowledged there.
- **Never crash on input**: a bad payload becomes a ``rejected`` row and an ``invalid`` count (logged
  with its topic) and is acknowledged, so it is not re-delivered forever. A store error (disk full)
  keeps the batch in memory, unacknowledged, and retries every second: the broker still holds it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mpox_aism.console.config import ConsoleMqttConfig
from mpox_aism.console.ingest import ActionIn, HistoryIn, Kind, Rejected, parse, subscriptions
from mpox_aism.console.store import ConsoleStore, Incoming, Outcome

if TYPE_CHECKING:
    from mpox_aism.console.acks import ConsoleActions
from mpox_aism.kiosk.mqtt import MqttConfigError, MqttPublisher, _QuietPahoRetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One message as paho handed it over, tagged with the connection that delivered it."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    received_at: float


@dataclass(frozen=True)
class _Subscribed:
    """A SUBACK: recorded in the store (``meta``) through the writer, in order with the messages."""

    at: float
    session_present: bool


@dataclass
class SubscriberStats:
    connected: bool
    connects: int
    received: int
    committed_batches: int
    acked: int
    stale_not_acked: int
    store_errors: int
    last_error: str | None


class ConsoleSubscriber:
    """Broker → store. :meth:`start` returns at once (the connection retries forever); :meth:`close` drains."""

    def __init__(self, cfg: ConsoleMqttConfig, store: ConsoleStore, *, password: str | None = None,
                 max_batch: int | None = None, on_outcome: Callable[[Delivery, Outcome], None] | None = None,
                 actions: ConsoleActions | None = None) -> None:
        if password is not None and cfg.username is None:
            raise MqttConfigError("MQTT password given without a username")
        self.cfg, self.store = cfg, store
        self.max_batch = max_batch or cfg.receive_maximum
        self.on_outcome = on_outcome
        self.actions = actions  # staff actions and histories are merged there (None: acknowledged, not kept)
        self.on_subscribed: Callable[[], None] | None = None  # after a SUBACK is recorded (tests, readiness)
        self.topics = subscriptions(cfg.topic_root)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        paho_log = logging.getLogger(f"{__name__}.paho")
        if not any(isinstance(f, _QuietPahoRetry) for f in paho_log.filters):
            paho_log.addFilter(_QuietPahoRetry())  # the kiosk's: paho's retry noise at DEBUG, ours says it once
        c.enable_logger(paho_log)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            # the kiosk's rules, checked the same way (CA pinned, no plaintext fallback)
            MqttPublisher._configure_tls(c, cfg.tls.model_dump())
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c
        self._queue: queue.Queue[Delivery | _Subscribed] = queue.Queue()
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._session_present = False
        self._stats = SubscriberStats(False, 0, 0, 0, 0, 0, 0, None)
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                   clean_start=False, properties=props)
        self._writer = threading.Thread(target=self._write_loop, name="console-writer", daemon=True)
        self._writer.start()
        self._client.loop_start()

    def close(self, timeout: float = 10.0) -> None:
        """Commit and acknowledge what has arrived, then disconnect (the session stays on the broker)."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        if self._writer is not None:  # still busy (messages kept coming): commit the rest, unacknowledged
            self._writer.join(timeout)

    @property
    def alive(self) -> bool:
        """The writer thread runs (False before start() and after close())."""
        return self._writer is not None and self._writer.is_alive()

    def stats(self) -> SubscriberStats:
        with self._ack_lock:
            return SubscriberStats(**vars(self._stats))

    # -- paho callbacks (network thread) -------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            hint = " (not authorised: check the console's MQTT user, password and the broker's ACL)" \
                if reason_code.value in (134, 135) else ""
            self._error(f"broker {self.cfg.host}:{self.cfg.port} refused the connection: {reason_code}{hint}; "
                        "retrying")
            return
        with self._ack_lock:
            self._generation += 1
            self._connected = True
            self._stats.connected = True
            self._stats.connects += 1
            self._stats.last_error = None
        log.info("connected to %s:%d (session %s); subscribing to %s", self.cfg.host, self.cfg.port,
                 "resumed" if flags.session_present else "new: nothing was queued for this console",
                 ", ".join(self.topics))
        # always subscribe: a broker that lost its state (a crash before it saved) must get them again
        self._session_present = bool(flags.session_present)
        # the retained histories (acks) only when the subscription is new: a resumed session already has them
        client.subscribe([(t, SubscribeOptions(qos=1, retainHandling=1 if f"/{Kind.ACKS.value}/" in t else 0))
                          for t in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            self._error(f"broker refused subscription(s) {self.topics}: {bad} (check the broker's ACL for the "
                        f"console's user)")
            return
        self._queue.put(_Subscribed(time.time(), self._session_present))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._error(f"cannot connect to broker {self.cfg.host}:{self.cfg.port}; retrying with backoff",
                    level=logging.WARNING)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        with self._ack_lock:
            self._generation += 1  # nothing delivered on the old connection may be acknowledged now
            was, self._connected = self._connected, False
            self._stats.connected = False
        if was and not self._stop.is_set():
            self._error(f"disconnected from {self.cfg.host}:{self.cfg.port}: {reason_code}; reconnecting",
                        level=logging.WARNING)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._ack_lock:
            gen = self._generation
            self._stats.received += 1
        self._queue.put(Delivery(msg.topic, bytes(msg.payload), msg.qos, msg.mid, gen, time.time()))

    # -- writer thread -------------------------------------------------------------------------------
    def _next_batch(self) -> list[Delivery | _Subscribed]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                if self._stop.is_set():
                    return
                continue
            self._commit(batch)

    def _commit(self, batch: list[Delivery | _Subscribed]) -> None:
        deliveries = [d for d in batch if isinstance(d, Delivery)]
        items = [Incoming(d.topic, parse(self.cfg.topic_root, d.topic, d.payload), d.received_at)
                 for d in deliveries]
        while True:
            try:
                outcomes = self.store.apply(items) if items else []
                for k, item in enumerate(items):
                    if self.actions is not None and isinstance(item.parsed, ActionIn | HistoryIn):
                        outcomes[k] = self.actions.apply(item.parsed)  # idempotent: a retry repeats nothing
                subscribed = [s for s in batch if isinstance(s, _Subscribed)]
                for s in subscribed:
                    self.store.set_meta(subscribed_at=s.at, session_present=s.session_present)
                break
            except Exception as e:  # disk full, I/O: keep the batch, unacknowledged; the broker holds it too
                with self._ack_lock:
                    self._stats.store_errors += 1
                self._error(f"cannot commit {len(items)} message(s) to {self.store.path}: {type(e).__name__}: "
                            f"{e}; retrying every second", exc_info=True)
                if self._stop.wait(1.0):
                    return  # closing: not acknowledged, so the broker re-delivers them to the next start
        for d, item, outcome in zip(deliveries, items, outcomes, strict=True):
            if isinstance(item.parsed, Rejected):
                log.warning("rejected a message on %s: %s", d.topic, item.parsed.error)
            elif outcome is Outcome.CONFLICT:
                log.error("event on %s has an event_id already stored with a different payload; kept the first, "
                          "counted as a conflict", d.topic)
            if self.on_outcome is not None:
                self.on_outcome(d, outcome)
        self._ack(deliveries)
        if subscribed and self.on_subscribed is not None:
            self.on_subscribed()

    def _ack(self, deliveries: list[Delivery]) -> None:
        with self._ack_lock:  # held across ack(): a disconnect cannot slip between the check and the PUBACK
            for d in deliveries:
                if d.qos == 0:
                    continue
                if d.generation == self._generation and self._connected:
                    self._client.ack(d.mid, d.qos)
                    self._stats.acked += 1
                else:
                    self._stats.stale_not_acked += 1
            self._stats.committed_batches += 1

    def _error(self, msg: str, *, level: int = logging.ERROR, exc_info: bool = False) -> None:
        with self._ack_lock:
            repeat = msg == self._stats.last_error
            self._stats.last_error = msg
        log.log(logging.DEBUG if repeat else level, "%s", msg, exc_info=exc_info)

