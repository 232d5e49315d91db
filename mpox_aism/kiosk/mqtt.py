"""MQTT publisher that drains the persistent outbox: no alert is lost while the broker is away.

Flow: ``publish_event`` commits the alert to the :class:`~mpox_aism.kiosk.outbox.Outbox` and wakes a drain
thread; the drain thread hands outbox messages to paho **in id order** (QoS1, at most
``max_inflight`` at a time) and deletes each row only after the broker's PUBACK for it. Messages in
flight are not re-sent on the same connection. After any (re)connect, paho's in-memory copies are
dropped and the whole outbox is re-sent from the oldest row, so what the broker may not have got
goes again: the wire can carry duplicates (the consumer de-duplicates by ``event_id``), never gaps.
The protocol is MQTT 5 because its PUBACK can say no: a publish the broker's ACL refuses (0x87, e.g. a
kiosk whose user name is not its station id) keeps its row, is logged as an error with the reason code,
counted (``stats()["refused"]``) and offered again every ``REFUSED_RETRY_S``; under MQTT 3.1.1 mosquitto
acknowledges such a publish as sent and drops it, and the alert would be gone.

Availability: the last will publishes ``<prefix>/availability`` = ``offline`` (retained, QoS1) if the
process dies; on connect we publish retained ``online``; ``close()`` publishes ``offline`` itself and
then disconnects cleanly (a clean DISCONNECT suppresses the will).

Nothing here raises into the caller because the broker is down: ``connect_async`` + ``loop_start``
retry forever with backoff (1 s doubling to 30 s), and refusals (bad password, not authorised) are
logged with their reason code and retried, because a kiosk must recover by itself once an operator
fixes the broker side. Configuration errors (a TLS-required setup without a CA) raise at
construction, before anything is started.

Needs paho-mqtt >= 2.2 (``Client.drop_out_messages``).
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from mpox_aism.kiosk.outbox import Outbox

log = logging.getLogger(__name__)

AVAILABILITY = "availability"
REFUSED_RETRY_S = 30.0  # a publish the broker refused (ACL) is offered again after this
ONLINE = b"online"
OFFLINE = b"offline"


class MqttConfigError(ValueError):
    """A publisher configuration that must not be started (raised at construction)."""


def _json_default(obj: Any) -> Any:
    """Let numpy scalars/arrays (probabilities from the pipeline) serialise; anything else is a bug."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class _QuietPahoRetry(logging.Filter):
    """paho 2.2 logs "Client is not connected" at ERROR after every failed reconnect; our own
    on_connect_fail message already says so (once, with the socket error), so keep that at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith("Client is not connected"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class MqttPublisher:
    """Publishes outbox messages to one broker; see the module docstring for the guarantees.

    Call :meth:`start` to begin (returns at once, whatever the broker's state) and :meth:`close` to
    stop. ``stats()`` reports connection state and counters for the health endpoint.
    """

    def __init__(self, outbox: Outbox, *, host: str, port: int, client_id: str, topic_prefix: str,
                 username: str | None = None, password: str | None = None, tls: dict[str, Any] | None = None,
                 keepalive: int = 30, max_inflight: int = 20,
                 reconnect_min_s: int = 1, reconnect_max_s: int = 30) -> None:
        if not host:
            raise MqttConfigError("MQTT host is empty")
        if not 0 < port < 65536:
            raise MqttConfigError(f"MQTT port out of range: {port}")
        if max_inflight < 1:
            raise MqttConfigError(f"max_inflight must be >= 1, got {max_inflight}")
        prefix = topic_prefix.strip("/")
        if not prefix or any(c in prefix for c in "+#"):
            raise MqttConfigError(f"bad topic_prefix {topic_prefix!r} (non-empty, no wildcards)")
        if password is not None and username is None:
            raise MqttConfigError("MQTT password given without a username")
        self.outbox = outbox
        self.host, self.port = host, port
        self.topic_prefix = prefix
        self.availability_topic = f"{prefix}/{AVAILABILITY}"
        self.max_inflight = max_inflight
        self.keepalive = keepalive

        # MQTT 5: a broker can refuse a publish in its PUBACK (0x87, not authorised by its ACL); under 3.1.1
        # mosquitto acknowledges the refused alert as sent and drops it, and the outbox would delete it
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if not hasattr(c, "drop_out_messages"):
            raise MqttConfigError("paho-mqtt >= 2.2 is required (Client.drop_out_messages)")
        paho_log = logging.getLogger(f"{__name__}.paho")
        if not any(isinstance(f, _QuietPahoRetry) for f in paho_log.filters):
            paho_log.addFilter(_QuietPahoRetry())
        c.enable_logger(paho_log)
        c.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            self._configure_tls(c, tls)
        c.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        # our window is max_inflight outbox messages + availability messages; paho must never hold
        # back (queue) one of ours, or the "sent" bookkeeping below would be wrong
        c.max_inflight_messages_set(max_inflight + 4)
        c.max_queued_messages_set(0)  # unlimited: we never hand paho more than the window anyway
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self._client = c
        self._subscriptions: list[tuple[str, Callable[[str, bytes], None]]] = []

        # _send_lock serialises "hand a message to paho + record its mid" against the reset done in
        # on_connect, so a mid is never recorded against the wrong connection. on_publish must not
        # take it (paho calls on_publish holding its own out-message lock, which publish() needs).
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the fields below; never held while calling paho
        self._inflight: dict[int, int | None] = {}  # mid -> outbox id (None: availability message)
        self._early: dict[int, Any] = {}  # PUBACKs (mid -> reason code) that came before publish() returned
        self._acked: list[int] = []  # outbox ids PUBACKed, to delete on the drain thread
        self._refused: list[tuple[int, str]] = []  # outbox ids the broker refused (and why): kept, offered again
        self._retry_at: float | None = None  # when refused rows are offered again
        self._refused_total = 0
        self._sent_upto = 0  # highest outbox id handed to paho on this connection
        self._connected = False
        self._published = 0
        self._last_error: str | None = None
        self._closing = False

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    @staticmethod
    def _configure_tls(c: mqtt.Client, tls: dict[str, Any]) -> None:
        unknown = set(tls) - {"ca_certs", "certfile", "keyfile", "require"}
        if unknown:
            raise MqttConfigError(f"unknown tls option(s): {sorted(unknown)}")
        require = bool(tls.get("require", True))
        ca, cert, key = tls.get("ca_certs"), tls.get("certfile"), tls.get("keyfile")
        if require and not ca:
            raise MqttConfigError("tls.require is set but no tls.ca_certs is given: refusing to start "
                                  "(the broker's CA must be pinned; plaintext is never used as a fallback)")
        for name, value in (("ca_certs", ca), ("certfile", cert), ("keyfile", key)):
            if value and not Path(value).is_file():
                raise MqttConfigError(f"tls.{name} not found: {value}")
        if key and not cert:
            raise MqttConfigError("tls.keyfile given without tls.certfile")
        # always verify the server (CERT_REQUIRED + hostname); no ca_certs means the system trust store
        c.tls_set(ca_certs=ca or None, certfile=cert or None, keyfile=key or None,
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.tls_insecure_set(False)

    # -- public API -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the network and drain threads; returns at once even if the broker is unreachable."""
        if self._started:
            return
        self._started = True
        self._stop.clear()
        with self._lock:
            self._closing = False
        # a clean start: what the broker has not acknowledged is still in the outbox and is sent again
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive, clean_start=True)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._drain_loop, name="mqtt-drain", daemon=True)
        self._thread.start()

    def publish_event(self, topic_suffix: str, payload: dict[str, Any]) -> str:
        """Commit an event to the outbox (on disk before any send) and wake the drain loop.

        Adds an ``event_id`` (uuid4) when the payload has none: it is the consumer's de-duplication
        key. Returns the event id. Raises only for a bad payload or topic, never for the broker.
        """
        suffix = topic_suffix.strip("/")
        if not suffix or any(ch in suffix for ch in "+#"):
            raise ValueError(f"bad topic suffix {topic_suffix!r}")
        body = dict(payload)
        event_id = str(body.setdefault("event_id", uuid.uuid4().hex))
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                          default=_json_default).encode()
        self.outbox.put(f"{self.topic_prefix}/{suffix}", data, qos=1, retain=False)
        self._wake.set()
        return event_id

    def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        """Also receive ``topic`` (QoS 1) on this connection, now if connected and again at every connect.
        ``handler(topic, payload)`` runs in paho's network thread (a message is acknowledged when it returns);
        what it raises is logged. One connection per kiosk, because the site broker allows one per account
        (``use_username_as_clientid``): a second connection would push this one off, and back."""
        self._subscriptions.append((topic, handler))
        if self.connected:
            self._client.subscribe(topic, qos=1)

    def wake(self) -> None:
        """Something was written to the outbox by its owner (the event sink): send it now, not in a second."""
        self._wake.set()

    def publish_status(self, suffix: str, payload: dict[str, Any]) -> bool:
        """Retained, best-effort state (not an alert): sent only while connected, never queued."""
        if not self.connected:
            return False
        data = json.dumps(payload, separators=(",", ":"), default=_json_default).encode()
        self._client.publish(f"{self.topic_prefix}/{suffix.strip('/')}", data, qos=0, retain=True)
        return True

    def stats(self) -> dict[str, Any]:
        ob = self.outbox.stats()
        with self._lock:
            return {"connected": self._connected, "published": self._published, "pending": ob["depth"],
                    "dropped": ob["dropped"], "refused": self._refused_total, "last_error": self._last_error}

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def close(self, timeout: float = 5.0) -> None:
        """Publish retained ``offline``, disconnect cleanly, stop threads. Unsent events stay queued."""
        if not self._started:
            return
        with self._lock:
            self._closing = True
            connected = self._connected
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if connected:
            info = self._publish_tracked(self.availability_topic, OFFLINE, retain=True, outbox_id=None)
            if info is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError) as e:  # connection dropped meanwhile
                    log.warning("could not publish 'offline' before closing: %s", e)
        self._client.disconnect()
        self._client.loop_stop()
        self._apply_acks()  # PUBACKs that came in while closing
        with self._lock:
            self._connected = False
        self._started = False

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paho callbacks (network thread) ----------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            hint = ""
            if reason_code.value in (134, 135):  # bad user name or password / not authorized
                hint = " (not authorised: check the MQTT username/password and the broker's ACL)"
            msg = f"broker {self.host}:{self.port} refused the connection: {reason_code} " \
                  f"(code {reason_code.value}){hint}; retrying"
            self._set_error(msg, logging.ERROR)
            return
        with self._send_lock:
            # drop paho's in-memory retries: everything unacked is still in the outbox and is re-sent
            # from the oldest below, in order, by the drain thread
            client.drop_out_messages()
            with self._lock:
                self._inflight.clear()
                self._early.clear()
                self._sent_upto = 0
                self._connected = True
                self._last_error = None
            self._publish_tracked_locked(self.availability_topic, ONLINE, retain=True, outbox_id=None)
        for topic, _ in self._subscriptions:
            client.subscribe(topic, qos=1)
        log.info("connected to MQTT broker %s:%d; %d event(s) waiting", self.host, self.port, self.outbox.depth())
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        for topic, handler in self._subscriptions:
            if mqtt.topic_matches_sub(topic, msg.topic):
                try:
                    handler(msg.topic, bytes(msg.payload))
                except Exception as e:  # never into paho's thread
                    log.error("message on %s not handled: %s: %s", msg.topic, type(e).__name__, e)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` block, so the socket error is still visible here
        err = sys.exc_info()[1]
        detail = f"{type(err).__name__}: {err}" if err is not None else "connection failed"
        self._set_error(f"cannot connect to broker {self.host}:{self.port}: {detail}; retrying with backoff",
                        logging.WARNING)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        with self._lock:
            was, self._connected = self._connected, False
            closing = self._closing
        if was and not closing:
            self._set_error(f"disconnected from broker {self.host}:{self.port}: {reason_code}; reconnecting",
                            logging.WARNING)
        self._wake.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            if mid in self._inflight:
                self._settle_locked(self._inflight.pop(mid), reason_code)
            else:
                self._early[mid] = reason_code  # publish() has not returned yet; the sender claims it
        self._wake.set()

    def _settle_locked(self, outbox_id: int | None, reason_code: Any) -> None:
        """A PUBACK for ``outbox_id`` (None: an availability message): delete the row, or keep it if refused."""
        if outbox_id is None:
            return
        if getattr(reason_code, "is_failure", False):
            self._refused.append((outbox_id, f"{reason_code} (code {reason_code.value})"))
        else:
            self._acked.append(outbox_id)

    # -- sending ----------------------------------------------------------------------------------
    def _publish_tracked(self, topic: str, payload: bytes, *, retain: bool,
                         outbox_id: int | None) -> mqtt.MQTTMessageInfo | None:
        with self._send_lock:
            return self._publish_tracked_locked(topic, payload, retain=retain, outbox_id=outbox_id)

    def _publish_tracked_locked(self, topic: str, payload: bytes, *, retain: bool,
                                outbox_id: int | None) -> mqtt.MQTTMessageInfo | None:
        """publish() and record mid -> outbox id; the caller holds _send_lock."""
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except ValueError as e:
            # a row paho can never send (invalid topic, oversized payload; publish_event cannot make
            # one, another writer could): set it aside, counted as dropped, rather than block every
            # alert behind it forever
            if outbox_id is not None and self.outbox.discard(outbox_id):
                self._set_error(f"outbox message {outbox_id} to {topic!r} can never be published ({e}); "
                                "discarded and counted as dropped", logging.ERROR)
            return None
        with self._lock:
            if info.mid in self._early:
                self._settle_locked(outbox_id, self._early.pop(info.mid))
            else:
                self._inflight[info.mid] = outbox_id
        return info

    def _send_window(self) -> None:
        """Hand the next outbox messages to paho, in id order, up to the in-flight window."""
        with self._send_lock:
            with self._lock:
                if not self._connected:
                    return
                room = self.max_inflight - sum(1 for v in self._inflight.values() if v is not None)
                after = self._sent_upto
            if room <= 0:
                return
            batch = self.outbox.pending(room, after_id=after)
            sent: list[int] = []
            for m in batch:
                info = self._publish_tracked_locked(m.topic, m.payload, retain=m.retain, outbox_id=m.id)
                if info is None:
                    continue  # discarded
                sent.append(m.id)
                with self._lock:
                    self._sent_upto = m.id
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    # not connected any more: paho keeps a copy that on_connect drops; the outbox
                    # row stays and is re-sent from the oldest after the reconnect
                    break
        self.outbox.note_attempts(sent)

    def _apply_acks(self) -> None:
        with self._lock:
            ids, self._acked = self._acked, []
            refused, self._refused = self._refused, []
        if ids:
            self.outbox.ack_many(ids)
            with self._lock:
                self._published += len(ids)
        if refused:
            with self._lock:
                self._refused_total += len(refused)
                self._retry_at = time.monotonic() + REFUSED_RETRY_S
            first_id, why = refused[0]
            self._set_error(f"broker {self.host}:{self.port} refused {len(refused)} event(s) (outbox id {first_id}: "
                            f"{why}): kept in the outbox and offered again every {REFUSED_RETRY_S:g} s; check "
                            "the MQTT username and the broker's ACL (a kiosk may publish only under its own "
                            "station id)", logging.ERROR)

    def _offer_refused_again(self) -> None:
        """Send the outbox again from its oldest row (duplicates are the consumer's to collapse; refused rows
        are rare and an operator may have fixed the ACL meanwhile)."""
        with self._send_lock, self._lock:
            if self._retry_at is None or time.monotonic() < self._retry_at:
                return
            self._retry_at = None
            self._sent_upto = 0

    def _drain_loop(self) -> None:
        last_expire = 0.0
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._apply_acks()
                self._offer_refused_again()
                if not self._stop.is_set():
                    self._send_window()
                if time.monotonic() - last_expire > 60.0:
                    last_expire = time.monotonic()
                    self.outbox.expire()
            except Exception as e:  # e.g. disk full: keep the thread alive, the rows are still there
                self._set_error(f"drain loop error: {type(e).__name__}: {e}", logging.ERROR, exc_info=True)
                self._stop.wait(1.0)

    def _set_error(self, msg: str, level: int, *, exc_info: bool = False) -> None:
        with self._lock:
            repeat = msg == self._last_error
        # a broker that stays down would log every backoff step; say it once, then at debug. Logged
        # before the error is visible in stats(), so whoever reads it there also finds it in the log
        log.log(logging.DEBUG if repeat else level, "%s", msg, exc_info=exc_info)
        with self._lock:
            self._last_error = msg
