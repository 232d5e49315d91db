"""Staff actions: the schema is the model, the one rule settles concurrent actions, the log is idempotent."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from mpox_aism.kiosk.actions import Action, ActionHistory, ReviewStore, new_action_id, ordered, settled

SCHEMAS = Path(__file__).parents[2] / "docs" / "schema"


def act(action: str, at: str, *, by: str = "a.b", origin: str = "gate-1", action_id: str | None = None) -> Action:
    return Action(action_id=action_id or new_action_id(), event_id="ev-1", station_id="gate-1",
                  action=action, by=by, at=at, origin=origin)  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "name"), [(Action, "action-v1.json"), (ActionHistory, "action-history-v1.json")])
def test_the_schema_files_are_the_models(model: type, name: str) -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / name).read_text())
    generated = model.model_json_schema(by_alias=True)
    assert {k: v for k, v in schema.items() if k not in ("$schema", "$id", "title")} == \
        {k: v for k, v in generated.items() if k != "title"}
    a = act("reviewed", "2026-03-01T10:00:00+00:00")
    wire = json.loads((a if model is Action else ActionHistory(event_id="ev-1", station_id="gate-1",
                                                                actions=[a])).wire())
    jsonschema.Draft202012Validator(schema).validate(wire)
    assert model.model_validate(wire).wire() == json.dumps(wire, separators=(",", ":")).encode()


def test_at_is_normalised_to_utc_and_refused_without_a_zone() -> None:
    a = act("acknowledged", "2026-03-01T12:00:00.5+02:00")
    assert a.at == "2026-03-01T10:00:00.500000+00:00"
    with pytest.raises(ValueError, match="time zone"):
        act("acknowledged", "2026-03-01T12:00:00")
    with pytest.raises(ValueError):
        Action(action_id=new_action_id(), event_id="a/b", station_id="gate-1", action="reviewed", by="x",
               at="2026-03-01T12:00:00Z", origin="gate-1")  # an event id must be one topic level


def test_the_rule_latest_wins_but_reviewed_is_never_undone_by_acknowledged() -> None:
    ack1 = act("acknowledged", "2026-03-01T10:00:00+00:00", by="desk")
    rev = act("reviewed", "2026-03-01T10:00:01+00:00", by="dr.ng", origin="console-a")
    ack2 = act("acknowledged", "2026-03-01T10:00:02+00:00", by="late", origin="console-b")
    assert settled([ack1]) == ack1
    assert settled([ack1, rev, ack2]) == rev  # a later acknowledgement does not reopen a reviewed event
    # two reviews at once: the later `at` wins the state, an exact tie goes to the greater action_id
    rev2 = act("reviewed", "2026-03-01T10:00:01+00:00", by="other", origin="gate-1")
    winner = max(rev, rev2, key=lambda a: a.action_id)
    for perm in itertools.permutations([ack1, rev, ack2, rev2]):  # whatever order they arrived in
        assert settled(perm) == winner
        assert ordered(perm) == ordered([ack1, rev, rev2, ack2])  # one history, the same everywhere
    assert settled([]) is None


def test_the_store_is_idempotent_by_action_id_and_settles_by_the_rule(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "reviews.sqlite3", origin="gate-1")
    mine = store.record(event_id="ev-1", station_id="gate-1", action="acknowledged", by="desk")
    assert mine.origin == "gate-1" and [a.action_id for a in store.unsent()] == [mine.action_id]
    remote = act("reviewed", "2000-01-01T00:00:00+00:00", origin="console-a")  # older than mine: still wins
    assert store.merge([remote], sent=True) == [remote]
    assert store.merge([remote, remote], sent=True) == []  # delivered again: recorded once
    assert store.latest(["ev-1"])["ev-1"] == remote
    assert [a.action_id for a in store.history("ev-1")] == [remote.action_id, mine.action_id]
    store.mark_sent([mine.action_id])
    assert store.unsent() == []
    store.mark_sent([mine.action_id], sent=False)
    assert store.unsent() == [mine]


def test_a_reviews_file_from_before_actions_travelled_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "reviews.sqlite3"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
                    "action TEXT NOT NULL, by TEXT NOT NULL, note TEXT NOT NULL, time TEXT NOT NULL)")
        con.execute("INSERT INTO reviews (event_id, action, by, note, time) VALUES "
                    "('ev-9', 'reviewed', 'old.hand', 'seen', '2025-12-01T10:00:00.000+00:00')")
    con.close()
    store = ReviewStore(path, origin="gate-1")
    (a,) = store.history("ev-9")
    assert (a.action, a.by, a.note, a.origin, a.station_id) == ("reviewed", "old.hand", "seen", "gate-1", "gate-1")
    assert store.unsent() == [a]  # sent to the consoles like any action of this kiosk's page
    assert ReviewStore(path, origin="gate-1").history("ev-9") == [a]  # opening again changes nothing
