"""Console configuration: one pydantic model per concern, unknown keys are errors, every field described.

Same rules as the kiosk's (``mpox_aism.kiosk.config``): the MQTT password never lives in the file (an
environment variable, or the systemd credential ``mqtt-password``), and the TLS section is the kiosk's
own ``TlsConfig``, so both ends of a connection are configured, and refused, the same way.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mpox_aism.kiosk.config import HttpTlsConfig, SessionLimits, TlsConfig, read_yaml, validate
from mpox_aism.kiosk.host import state_dir


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleMqttConfig(_Model):
    url: str = Field(description="mqtt://host:port or mqtts://host:port of the broker the kiosks publish to.")
    client_id: str = Field("mpox-aism-console", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                           description="Fixed MQTT client id: the broker keeps the console's persistent session "
                           "(its subscriptions and the messages queued while it is away) under this id. Two "
                           "consoles must never share one (each would take the session from the other).")
    topic_root: str = Field("mpox-aism", description="Topic root: the console subscribes to "
                            "<root>/+/events, availability, status, actions, acks/+, health and "
                            "health/active.")
    username: str | None = Field(None, description="MQTT user name.")
    password_env: str = Field("MPOX_AISM_CONSOLE_MQTT_PASSWORD", description="Environment variable holding the "
                              "password; the systemd credential 'mqtt-password' is used when present.")
    send_username: str | None = Field(None, description="The account of the console's second connection, which "
                                      "publishes acknowledgements to the kiosks. A broker that allows one connection "
                                      "per account (the site broker: use_username_as_clientid) needs a second "
                                      "account here, e.g. 'console-send' (systemd/mosquitto/setup.sh console-send). "
                                      "None: the same account as username.")
    send_password_env: str = Field("MPOX_AISM_CONSOLE_SEND_PASSWORD", description="Environment variable holding "
                                   "send_username's password; the systemd credential 'mqtt-send-password' is used "
                                   "when present.")
    tls: TlsConfig | None = Field(None, description="TLS settings (the kiosk's model); required for mqtts://.")
    keepalive_s: int = Field(30, ge=2, le=3600, description="MQTT keepalive: a silent broker is noticed after "
                             "~1.5× this.")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=60, le=0xFFFFFFFE, description="MQTT v5 session expiry: how "
                                  "long the broker keeps the console's session, and queues alerts for it, while "
                                  "the console is away. Longer than any outage you plan for.")
    receive_maximum: int = Field(100, ge=1, le=65535, description="QoS 1 messages the broker may have "
                                 "in flight to the console (unacknowledged) at once: the most one commit batches.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {v!r}")
        return v

    @field_validator("topic_root")
    @classmethod
    def _root(cls, v: str) -> str:
        root = v.strip("/")
        if not root or any(c in root for c in "+#"):
            raise ValueError(f"bad topic_root {v!r} (non-empty, no wildcards)")
        return root

    @model_validator(mode="after")
    def _tls_for_mqtts(self) -> ConsoleMqttConfig:
        if urlparse(self.url).scheme == "mqtts" and self.tls is None:
            raise ValueError("mqtts:// needs a tls: section (at least ca_certs)")
        return self

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or ""

    @property
    def port(self) -> int:
        u = urlparse(self.url)
        return u.port or (8883 if u.scheme == "mqtts" else 1883)


class ConsoleStoreConfig(_Model):
    path: str = Field("console.sqlite3", description="SQLite file of the console's events; a relative path lives "
                      "in $STATE_DIRECTORY (systemd) or ./runs/state.")

    def resolved(self) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else state_dir() / p


class ConsoleHttpConfig(_Model):
    """The console's staff page: the kiosk's page code (accounts, sessions, CSRF, roles, audit), its own accounts."""

    enabled: bool = Field(True, description="Serve the staff page.")
    host: str = Field("127.0.0.1", description="Listen address of the console's page.")
    port: int = Field(8090, ge=0, lt=65536, description="Listen port of the console's page (0: any free one).")
    accounts: str = Field("staff.sqlite3", description="The console's staff accounts and audit trail "
                          "(`mpox-aism users --db FILE`); relative: next to the store.")
    sessions: SessionLimits = Field(default_factory=SessionLimits, description="Session and lock-out limits "
                                    "(the kiosk's).")
    tls: HttpTlsConfig | None = Field(None, description="Serve the page over HTTPS (the kiosk's model; the session "
                                      "cookie is then Secure). Unset: plain HTTP, for 127.0.0.1 or behind a TLS "
                                      "reverse proxy: staff passwords cross the network to this page.")


class ConsoleAcksConfig(_Model):
    """Staff actions sent back to the kiosks and the other consoles (``mpox_aism.console.acks``)."""

    outbox: str = Field("console-outbox.sqlite3", description="Persistent outbox of the histories to publish; "
                        "relative: next to the store.")
    retain_days: float = Field(30.0, gt=0, description="An event's retained history is cleared (an empty "
                               "retained message) once nobody acted on it for this long: longer than a kiosk "
                               "keeps an event on its page.")


class ConsoleConfig(_Model):
    mqtt: ConsoleMqttConfig = Field(description="The broker the kiosks publish to.")
    store: ConsoleStoreConfig = Field(default_factory=ConsoleStoreConfig, description="Where events are kept.")
    http: ConsoleHttpConfig = Field(default_factory=ConsoleHttpConfig, description="The console's staff page.")
    acks: ConsoleAcksConfig = Field(default_factory=ConsoleAcksConfig, description="Actions sent back.")

    def beside_store(self, path: str) -> Path:
        """The console's other files: an absolute path, or one next to its store."""
        p = Path(path)
        return p if p.is_absolute() else self.store.resolved().parent / p


def parse_console_config(data: object, source: str = "config") -> ConsoleConfig:
    return validate(ConsoleConfig, data, source)


def load_console_config(path: str | Path) -> ConsoleConfig:
    return parse_console_config(read_yaml(path), str(path))
