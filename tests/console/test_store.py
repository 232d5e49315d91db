"""The store on its own: idempotent by event_id, counted duplicates and conflicts, station state, rejects."""

from __future__ import annotations

from mpox_aism.bench.fleet import synthetic_event
from mpox_aism.console import store as store_mod
from mpox_aism.console.ingest import parse
from mpox_aism.console.store import ConsoleStore, Incoming, Outcome

ROOT = "mpox-aism"


def _in(topic: str, payload: bytes, at: float = 1.0) -> Incoming:
    return Incoming(topic, parse(ROOT, topic, payload), at)


def test_the_same_event_twice_is_stored_once_and_counted(tmp_path):
    ev = synthetic_event("s1", 0, "r")
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        t = "mpox-aism/s1/events"
        assert s.apply([_in(t, ev.wire())]) == [Outcome.STORED]
        before = s.stations()
        assert s.apply([_in(t, ev.wire(), at=2.0)]) == [Outcome.DUPLICATE]
        assert s.event_ids() == {ev.event_id}
        c = s.counts()
        assert (c.events, c.duplicates, c.conflicts, c.invalid) == (1, 1, 0, 0)
        assert s.stations() == before  # a duplicate changes nothing but the counter


def test_a_different_payload_under_a_stored_id_is_a_conflict_and_the_first_is_kept(tmp_path):
    ev = synthetic_event("s1", 0, "r")
    forged = ev.model_copy(update={"label": "chickenpox"})
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        t = "mpox-aism/s1/events"
        assert s.apply([_in(t, ev.wire()), _in(t, forged.wire())]) == [Outcome.STORED, Outcome.CONFLICT]
        assert s.counts().conflicts == 1 and s.counts().duplicates == 1


def test_station_state(tmp_path):
    old, new = synthetic_event("s1", 0, "r", now=1000.0), synthetic_event("s1", 1, "r", now=2000.0)
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        s.apply([_in("mpox-aism/s1/availability", b"online", 5.0), _in("mpox-aism/s1/events", new.wire()),
                 _in("mpox-aism/s1/events", old.wire())])  # an older event arriving late
        st = s.station("s1")
        assert st is not None and st.online is True and st.availability_at == 5.0 and st.events == 2
        assert st.last_event_ts == 2000.0 and st.last_event_id == new.event_id  # not moved back
        s.apply([_in("mpox-aism/s1/availability", b"offline", 6.0)])
        assert s.station("s1").online is False


def test_rejects_are_counted_and_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "MAX_REJECTED", 3)
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        out = s.apply([_in("mpox-aism/s1/events", f"bad {i}".encode()) for i in range(5)])
        assert out == [Outcome.REJECTED] * 5
        assert s.counts().invalid == 5 and s.counts().events == 0
        kept = s.rejected()
        assert [r.payload for r in kept] == [b"bad 2", b"bad 3", b"bad 4"]
        assert all(r.topic == "mpox-aism/s1/events" for r in kept)


def test_latency_is_commit_minus_event_time(tmp_path):
    ev = synthetic_event("s1", 0, "r", now=100.0)
    with ConsoleStore(tmp_path / "c.sqlite3", clock=lambda: 100.25) as s:
        s.apply([_in("mpox-aism/s1/events", ev.wire())])
        assert s.ingest_latencies_ms() == [250.0]


def test_readonly_reader_sees_the_writers_commits(tmp_path):
    path = tmp_path / "c.sqlite3"
    with ConsoleStore(path) as w, ConsoleStore(path, readonly=True) as r:
        w.apply([_in("mpox-aism/s1/events", synthetic_event("s1", 0, "r").wire())])
        assert r.counts().events == 1
