"""Fleet cache events (core/fleet_events.py, gateway/fleet.py): the payload codec and the dispatch as
pure functions, the listener's reactor side with fakes, and (on PostgreSQL) that a transaction
notifies exactly what it committed.
"""

from __future__ import annotations

import json

import pytest

from core import fleet_events
from core.fleet_events import BadPayload, decode, encode, plan

ME = "machine-a:100:abc"
OTHER = "machine-b:200:def"


def payload(**fields) -> str:
    return json.dumps({"v": 1, "from": OTHER, **fields})


# --- codec -----------------------------------------------------------------------------------------------


def test_a_subscriber_event_round_trips():
    [one] = encode(ME, "subscriber", ["13800000001", "13800000002"])
    event = decode(one)
    assert event == fleet_events.Event(ME, "subscriber", ("13800000001", "13800000002"))
    assert one.isascii() and len(one) < 100


def test_many_msisdns_fill_as_few_payloads_as_the_limit_allows():
    msisdns = [f"1380{n:07d}" for n in range(3000)]
    payloads = encode(ME, "subscriber", msisdns)
    sizes = [len(p.encode()) for p in payloads]
    assert all(s <= fleet_events.MAX_PAYLOAD for s in sizes)
    per_item = len('"13800000000",')
    base = len(json.dumps({"v": 1, "from": ME, "kind": "subscriber", "msisdns": []}, separators=(",", ":")))
    per_payload = (fleet_events.MAX_PAYLOAD - base) // per_item
    assert len(payloads) == -(-3000 // per_payload)  # full ones, then the rest
    assert all(s > fleet_events.MAX_PAYLOAD - per_item - 1 for s in sizes[:-1])
    back = [m for p in payloads for m in decode(p).msisdns]
    assert back == msisdns


def test_duplicates_are_sent_once_and_no_msisdn_is_no_payload():
    assert [decode(p).msisdns for p in encode(ME, "subscriber", ["1", "2", "1"])] == [("1", "2")]
    assert encode(ME, "subscriber", []) == []


def test_an_msisdn_too_long_for_any_payload_becomes_a_rewrite():
    payloads = encode(ME, "subscriber", ["1", "x" * 9000, "2"])
    assert [decode(p).kind for p in payloads] == ["rewrite"]


def test_a_small_limit_splits_exactly_at_the_limit():
    payloads = encode(ME, "subscriber", [str(10 ** 9 + n) for n in range(10)], limit=120)
    assert len(payloads) > 1 and all(len(p) <= 120 for p in payloads)
    assert sum(len(decode(p).msisdns) for p in payloads) == 10


def test_non_ascii_numbers_stay_within_the_byte_limit():
    payloads = encode(ME, "subscriber", [f"号码{n}" for n in range(2000)])
    assert all(p.isascii() and len(p) <= fleet_events.MAX_PAYLOAD for p in payloads)
    assert decode(payloads[0]).msisdns[0] == "号码0"


def test_rewrite_and_fixtures_events():
    assert decode(encode(ME, "rewrite")[0]) == fleet_events.Event(ME, "rewrite")
    assert decode(encode(ME, "fixtures", fixture_set=7)[0]) == fleet_events.Event(ME, "fixtures", (), 7)
    with pytest.raises(ValueError):
        encode(ME, "nonsense")


@pytest.mark.parametrize("raw, why", [
    ("{not json", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"kind": "rewrite"}), "sender"),
    (json.dumps({"from": "", "kind": "rewrite"}), "sender"),
    (json.dumps({"from": OTHER}), "kind"),
    (json.dumps({"from": OTHER, "kind": "subscriber", "msisdns": "138"}), "msisdns"),
    (json.dumps({"from": OTHER, "kind": "subscriber", "msisdns": [138]}), "msisdns"),
    (json.dumps({"from": OTHER, "kind": "fixtures", "set": "7"}), "set"),
    (json.dumps({"from": OTHER, "kind": "fixtures", "set": True}), "set"),
    (json.dumps({"from": OTHER, "kind": "subscriber", "msisdns": ["1" * 20] * 500}), "longer"),
])
def test_odd_payloads_are_refused(raw, why):
    with pytest.raises(BadPayload, match=why):
        decode(raw)
    with pytest.raises(BadPayload):
        plan(raw, ME)


# --- dispatch ---------------------------------------------------------------------------------------------


def test_dispatch_of_each_kind():
    assert plan(payload(kind="subscriber", msisdns=["1", "2", "1"]), ME) == [("invalidate", "1"), ("invalidate", "2")]
    assert plan(payload(kind="rewrite"), ME) == [("invalidate_all",)]
    assert plan(payload(kind="fixtures", set=4), ME, serving_set=3) == [("reload_fixtures", 4)]
    assert plan(payload(kind="fixtures"), ME, serving_set=3) == [("reload_fixtures", None)]


def test_own_events_unknown_kinds_and_the_set_already_served_do_nothing():
    mine = encode(ME, "subscriber", ["1"]) + encode(ME, "rewrite") + encode(ME, "fixtures", fixture_set=9)
    assert [plan(p, ME) for p in mine] == [[], [], []]
    assert plan(payload(kind="accounts_changed", msisdns=[1]), ME) == []  # a newer peer's kind
    assert plan(payload(kind="fixtures", set=4), ME, serving_set=4) == []


def test_after_a_connect_every_shelf_goes_and_a_newer_fixture_set_is_loaded():
    assert fleet_events.after_connect(5, 5) == [("invalidate_all",)]
    assert fleet_events.after_connect(None, None) == [("invalidate_all",)]
    assert fleet_events.after_connect(6, 5) == [("invalidate_all",), ("reload_fixtures", 6)]


class FakeRouter:
    def __init__(self):
        self.calls: list[tuple] = []

    def invalidate(self, msisdn):
        self.calls.append(("invalidate", msisdn))

    def invalidate_all(self):
        self.calls.append(("invalidate_all",))


def test_apply_makes_the_planned_router_calls():
    router, reloads = FakeRouter(), []
    fleet_events.apply([("invalidate", "1"), ("invalidate_all",), ("reload_fixtures", 3)], router,
                       lambda: reloads.append(1))
    assert router.calls == [("invalidate", "1"), ("invalidate_all",)] and reloads == [1]
    with pytest.raises(ValueError):
        fleet_events.apply([("explode",)], router, lambda: None)


def test_the_origin_comes_from_the_group_when_a_parent_set_it(monkeypatch):
    monkeypatch.setattr(fleet_events, "_origin", None)
    monkeypatch.setenv(fleet_events.ORIGIN_ENV, "group-7")
    assert fleet_events.origin() == "group-7"
    monkeypatch.setattr(fleet_events, "_origin", None)
    monkeypatch.delenv(fleet_events.ORIGIN_ENV)
    first = fleet_events.origin()
    assert first != "group-7" and fleet_events.origin() == first


def test_publish_does_nothing_on_sqlite(tmp_path):
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        assert fleet_events.publish(conn, "rewrite") == 0
    engine.dispose()


# --- the listener's reactor side ----------------------------------------------------------------------------


class FakeGateway:
    def __init__(self):
        from twisted.internet import task

        self.reactor = task.Clock()
        self.router = FakeRouter()
        self.fixture_set_id = 3
        self.restored = 0

    def restore_fixtures(self):
        self.restored += 1
        self.fixture_set_id += 1
        return True


def make_listener(reload=None):
    from gateway.fleet import FleetListener

    gw = FakeGateway()
    listener = FleetListener(gw, reload)
    listener.running = True  # as started, without its thread
    return gw, listener


def test_listener_applies_others_events_and_ignores_its_own():
    gw, listener = make_listener()
    listener.received(encode(OTHER, "subscriber", ["1", "2"])[0])
    listener.received(encode(fleet_events.origin(), "subscriber", ["3"])[0])
    listener.received(encode(OTHER, "fixtures", fixture_set=3)[0])  # served already
    listener.received(encode(OTHER, "fixtures", fixture_set=4)[0])
    assert gw.router.calls == [("invalidate", "1"), ("invalidate", "2")]
    assert gw.restored == 1 and gw.fixture_set_id == 4
    assert listener.stats == {"events": 4, "ignored": 2, "bad": 0, "invalidated": 2, "reloads": 1}


def test_listener_survives_junk_and_a_failing_reload():
    def broken():
        raise RuntimeError("bad fixtures in the database")

    gw, listener = make_listener(broken)
    listener.received("{junk")
    listener.received(encode(OTHER, "fixtures", fixture_set=9)[0])
    listener.received(encode(OTHER, "rewrite")[0])
    assert listener.stats["bad"] == 1 and gw.router.calls == [("invalidate_all",)]


def test_listener_drops_every_shelf_on_each_connect():
    gw, listener = make_listener()
    listener.connected(3)
    listener.connected(5)
    assert gw.router.calls == [("invalidate_all",), ("invalidate_all",)]
    assert gw.restored == 1 and listener.connections == 2


def test_listener_thread_reconnects_with_back_off_and_stops():
    """The thread's loop with a fake connection: one that fails, one that delivers then drops, one that stays."""
    import threading

    from gateway import fleet

    class Note:
        def __init__(self, text):
            self.payload = text

    class Conn:
        def __init__(self, notes, then_fail):
            self.notes, self.then_fail, self.closed = list(notes), then_fail, False

        def notifies(self, timeout):
            while self.notes:
                yield Note(self.notes.pop(0))
            if self.then_fail:
                raise OSError("server closed the connection")
            done.set()

        def close(self):
            self.closed = True

    done = threading.Event()
    attempts: list[Conn | Exception] = [OSError("refused"),
                                        Conn([encode(OTHER, "rewrite")[0]], then_fail=True),
                                        Conn([encode(OTHER, "subscriber", ["9"])[0]], then_fail=False)]
    conns = [a for a in attempts if isinstance(a, Conn)]

    def connect():
        step = attempts.pop(0)
        if isinstance(step, Exception):
            raise step
        return step, 3

    gw = FakeGateway()

    class Reactor:
        def __init__(self):
            self.queued: list = []

        def callFromThread(self, f, *args):
            self.queued.append((f, args))

    gw.reactor = Reactor()
    listener = fleet.FleetListener(gw, connect=connect)
    waits: list[float] = []
    listener._stopping.wait = lambda delay: waits.append(delay)  # no real back-off in a unit test
    listener.running = True
    thread = threading.Thread(target=listener._run, daemon=True)
    thread.start()
    assert done.wait(10)
    listener._stopping.set()
    thread.join(10)
    assert not thread.is_alive()
    for f, args in gw.reactor.queued:
        f(*args)
    assert waits == [0.5, 1.0]  # after the refusal, then after the drop (doubled: never stayed up a poll)
    assert listener.connections == 2 and all(c.closed for c in conns)
    assert gw.router.calls == [("invalidate_all",), ("invalidate_all",), ("invalidate_all",), ("invalidate", "9")]


# --- on PostgreSQL: what a transaction sends ------------------------------------------------------------


@pytest.fixture
def pg(pg_url):
    import psycopg

    from core.db import session_factory
    from gateway.fleet import connect_args
    from tests.test_offers_support import make_test_engine

    engine, drop = make_test_engine(pg_url)
    listen = psycopg.connect(**connect_args(engine))
    listen.execute(f"LISTEN {fleet_events.CHANNEL}")
    yield session_factory(engine), listen
    listen.close()
    drop()


def _heard(listen, wait: float = 0.3) -> list[fleet_events.Event]:
    return [decode(n.payload) for n in listen.notifies(timeout=wait)]


@pytest.mark.postgres
def test_a_commit_notifies_its_changed_subscribers_once(pg):
    from offers.router import mark_changed

    factory, listen = pg
    with factory() as session, session.begin():
        mark_changed(session, "13800000001")
        mark_changed(session, "13800000002")
        mark_changed(session, "13800000001")
    [event] = _heard(listen)
    assert event.kind == "subscriber" and sorted(event.msisdns) == ["13800000001", "13800000002"]
    assert event.sender == fleet_events.origin()


@pytest.mark.postgres
def test_a_rollback_notifies_nothing(pg):
    from offers.router import mark_changed

    factory, listen = pg
    with factory() as session:
        session.begin()
        mark_changed(session, "13800000001")
        session.rollback()
    assert _heard(listen) == []


@pytest.mark.postgres
def test_a_savepoint_rolled_back_does_not_lose_what_the_transaction_changed_before(pg):
    from offers.router import mark_changed

    factory, listen = pg
    with factory() as session, session.begin():
        mark_changed(session, "1")
        with session.begin_nested():
            mark_changed(session, "2")  # released: published with the savepoint, and not again
        nested = session.begin_nested()
        mark_changed(session, "3")
        nested.commit()
        failed = session.begin_nested()
        mark_changed(session, "4")
        failed.rollback()  # a notification sent in it would be gone: all is published again at the commit
        outer = session.begin_nested()
        with session.begin_nested():
            mark_changed(session, "5")  # published as the inner savepoint is released, gone with the outer one
        outer.rollback()
    events = _heard(listen)
    assert [sorted(e.msisdns) for e in events] == [["1", "2"], ["3"], ["1", "2", "3", "4", "5"]]


@pytest.mark.postgres
def test_a_thousand_changes_of_one_transaction_are_few_notifications(pg):
    from offers.router import mark_changed

    factory, listen = pg
    msisdns = [f"1380{n:07d}" for n in range(1000)]
    with factory() as session, session.begin():
        for m in msisdns:
            mark_changed(session, m)
    events = _heard(listen)
    assert len(events) == 2 and sorted(m for e in events for m in e.msisdns) == msisdns


@pytest.mark.postgres
def test_a_population_rewrite_notifies_a_rewrite(pg):
    from offers.population import generate

    factory, listen = pg
    generate(factory.kw["bind"], 5, 1)
    assert [e.kind for e in _heard(listen)] == ["rewrite"]


@pytest.mark.postgres
def test_storing_a_fixture_set_notifies_it_and_a_refused_set_notifies_nothing(pg_url):
    import psycopg
    from twisted.internet import task

    from core.fixtures import FixtureError, read_dir
    from gateway.app import Gateway
    from gateway.fleet import connect_args
    from tests.harness import ROOT

    gw = Gateway(task.Clock(), pg_url)
    listen = psycopg.connect(**connect_args(gw.engine))
    try:
        listen.execute(f"LISTEN {fleet_events.CHANNEL}")
        files = read_dir(str(ROOT / "fixtures" / "demo"))
        gw.apply_fixtures(files, "test")
        [event] = _heard(listen)
        assert event.kind == "fixtures" and event.fixture_set == gw.fixture_set_id is not None
        with pytest.raises(FixtureError):
            gw.apply_fixtures({**files, "offers.yaml": "offers: [unclosed"}, "test")
        assert _heard(listen) == []
        assert plan(encode(OTHER, "fixtures", fixture_set=gw.fixture_set_id)[0], ME, gw.fixture_set_id) == []
    finally:
        listen.close()
        gw.engine.dispose()


def test_subscriber_changed_listeners_hear_of_the_commit_not_of_a_savepoint_release(tmp_path):
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from offers.router import Router, mark_changed

    router = Router(lambda: None, {})
    heard: list[str] = []
    router.subscriber_changed_listeners.append(heard.append)
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with Session(engine) as session:
        with session.begin():
            session.execute(text("SELECT 1"))
            mark_changed(session, "1")
            with session.begin_nested():
                mark_changed(session, "2")
            failed = session.begin_nested()
            mark_changed(session, "3")
            failed.rollback()
            assert heard == []  # the other workers would re-read the database before the commit
        assert sorted(heard) == ["1", "2", "3"]
        heard.clear()
        with session.begin():
            session.execute(text("SELECT 1"))  # the next transaction of the same session starts afresh
        assert heard == []
    engine.dispose()
