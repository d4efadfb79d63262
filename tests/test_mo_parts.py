"""Kept long-MO parts: saved, released when whole, restored into a reassembler with their clock (SQLite and
PostgreSQL), and copies of parts of an already whole message are not kept."""

from __future__ import annotations

from twisted.internet.task import Clock

from core.db import import_models, make_engine, migrate, session_factory
from gateway.mo_parts import HeldPart, PartStore
from gateway.smpp.text import ConcatInfo, Reassembler
from notifier.models import PendingPart


def _factory(db_url: str):
    import_models()
    engine = make_engine(db_url)
    migrate(engine)
    return session_factory(engine)


def test_parts_survive_a_restart_and_the_whole_message_releases_them(db_url):
    factory = _factory(db_url)
    clock = Clock()
    clock.advance(1000)
    store, before = PartStore("smpp:local"), Reassembler(clock.seconds, timeout=60)
    assert before.add("a", "10086", 7, 3, 1, b"CX", 0) is None
    writes = store.keep(before, "a", "10086", ConcatInfo(7, 3, 1), b"CX", 0, HeldPart("m1", 1), clock.seconds())
    clock.advance(10)
    assert before.add("a", "10086", 7, 3, 2, b"Y", 0) is None
    writes += store.keep(before, "a", "10086", ConcatInfo(7, 3, 2), b"Y", 0, HeldPart("m2", 0), clock.seconds())
    assert PartStore("upstream").keep(before, "a", "10086", ConcatInfo(7, 3, 3), b"E", 0, HeldPart("m3", 0), 0) == ()
    with factory() as session, session.begin():
        for write in writes:
            write(session)

    clock.advance(20)  # the process restarts: a new reassembler, 30 s after the first part came
    after = Reassembler(clock.seconds, timeout=60)
    with factory() as session, session.begin():
        held = store.restore(session, after, clock.seconds(), 60)
        assert PartStore("upstream").restore(session, Reassembler(clock.seconds), clock.seconds(), 60) == {}
    assert held == {("a", "10086"): [HeldPart("m1", 1), HeldPart("m2", 0)]}
    assert after.next_deadline() == 1060, "the reassembly clock runs from the first part's arrival"
    assert after.add("a", "10086", 7, 3, 3, b"E", 0) == "CXYE"
    with factory() as session, session.begin():
        for write in store.release_whole("a", "10086", ConcatInfo(7, 3, 3)):
            write(session)
    with factory() as session:
        assert session.query(PendingPart).count() == 0


def test_parts_older_than_twice_the_timeout_are_dropped_whoever_kept_them(db_url):
    factory = _factory(db_url)
    gone, mine = PartStore("smpp:dead-1234"), PartStore("smpp:local")
    with factory() as session, session.begin():
        gone.save("a", "10086", ConcatInfo(1, 2, 1), b"old", 0, HeldPart("m1", 0), 1000)(session)
        mine.save("b", "10086", ConcatInfo(2, 2, 1), b"new", 0, HeldPart("m2", 0), 1100)(session)
    clock = Clock()
    clock.advance(1121)  # the first is 121 s old, over 2 x 60; the second 21 s
    with factory() as session, session.begin():
        assert mine.restore(session, Reassembler(clock.seconds, timeout=60), clock.seconds(), 60) == {
            ("b", "10086"): [HeldPart("m2", 0)]}
    with factory() as session:
        assert [row.sender for row in session.query(PendingPart)] == ["b"]


def test_a_copy_of_a_part_of_a_whole_message_is_not_kept():
    clock = Clock()
    reassembler = Reassembler(clock.seconds, timeout=60)
    reassembler.add("a", "10086", 9, 2, 1, b"CX", 0)
    assert reassembler.add("a", "10086", 9, 2, 2, b"YE", 0) == "CXYE"
    assert reassembler.add("a", "10086", 9, 2, 1, b"CX", 0) is None  # sent again after completion
    assert not reassembler.holds("a", "10086", 9, 2, 1)
    assert PartStore("smpp").keep(reassembler, "a", "10086", ConcatInfo(9, 2, 1), b"CX", 0, HeldPart("m", 0), 0) == ()
    assert PartStore("smpp").release_whole("a", "10086", None) == ()
