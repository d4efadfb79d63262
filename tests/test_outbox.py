"""The durable outbox's state changes, on SQLite and PostgreSQL."""

from __future__ import annotations

from core.db import import_models, make_engine, migrate, session_factory
from notifier.models import OutboxMessage
from notifier.outbox import Outbox


def test_queued_rows_past_validity_expire_and_nothing_else(db_url):
    import_models()
    engine = make_engine(db_url)
    migrate(engine)
    clock = [1000.0]
    outbox = Outbox(lambda: clock[0], {"smpp.validity": 60.0})
    factory = session_factory(engine)
    with factory() as session, session.begin():
        old = outbox.enqueue(session, kind="reply", source="10086", dest="1", text="a", account="tester")
        sending = outbox.enqueue(session, kind="reply", source="10086", dest="2", text="b", account="tester",
                                 lease_owner="me")
        clock[0] += 30
        young = outbox.enqueue(session, kind="reply", source="10086", dest="3", text="c", account="tester")
    clock[0] += 30  # the first two are exactly 60 s old, the last 30 s
    with factory() as session, session.begin():
        assert outbox.expire_due(session) == 1
    with factory() as session:
        states = {r.message_id: r.state for r in session.query(OutboxMessage)}
    assert states == {old.message_id: "expired", sending.message_id: "sending", young.message_id: "queued"}
