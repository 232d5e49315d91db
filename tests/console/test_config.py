"""The console's config: unknown keys refused, mqtts needs TLS, relative store paths in the state directory."""

from __future__ import annotations

import pytest

from mpox_aism.console.config import load_console_config, parse_console_config
from mpox_aism.kiosk.config import ConfigError


def test_minimal_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = parse_console_config({"mqtt": {"url": "mqtt://broker:1884"}})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.topic_root) == ("broker", 1884, "mpox-aism")
    assert cfg.mqtt.client_id == "mpox-aism-console"
    assert cfg.store.resolved() == tmp_path / "state" / "console.sqlite3"


@pytest.mark.parametrize("data, where", [
    ({"mqtt": {"url": "mqtt://b"}, "extra": 1}, "extra"),
    ({"mqtt": {"url": "mqtt://b", "passwrd": "x"}}, "mqtt.passwrd"),
    ({"mqtt": {"url": "http://b"}}, "mqtt.url"),
    ({"mqtt": {"url": "mqtts://b"}}, "mqtt"),
    ({"mqtt": {"url": "mqtt://b", "topic_root": "a/+"}}, "mqtt.topic_root"),
    ({"mqtt": {"url": "mqtt://b", "client_id": "has space"}}, "mqtt.client_id"),
    ({}, "mqtt"),
])
def test_refused(data, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        parse_console_config(data)


def test_file(tmp_path):
    p = tmp_path / "console.yaml"
    p.write_text("mqtt:\n  url: mqtts://broker:8883\n  tls:\n    ca_certs: /etc/ca.pem\nstore:\n  path: /x/c.db\n")
    cfg = load_console_config(p)
    assert cfg.mqtt.tls is not None and cfg.mqtt.port == 8883 and str(cfg.store.resolved()) == "/x/c.db"
    with pytest.raises(ConfigError, match="cannot read"):
        load_console_config(tmp_path / "missing.yaml")
