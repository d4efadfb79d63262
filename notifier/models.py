"""Tables of the messaging core: the durable outbox, the message log, accounts and ops tokens.

Timestamps are float seconds since the epoch as given by the injected clock
(``reactor.seconds()``, ``task.Clock().seconds()`` in tests).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base

OUTBOX_STATES = ("queued", "sending", "sent", "delivered", "failed", "expired")
FINAL_STATES = ("delivered", "failed", "expired")
LIVE_STATES = ("queued", "sending", "sent")  # rows a sender or a receipt will still change


class OutboxMessage(Base):
    """One outbound message, written before any wire sees it.

    ``state``: queued -> sending -> sent -> delivered, or -> failed / expired.
    A row in ``sending`` whose lease ran out (the process died) is due again.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(160), unique=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # reply, receipt, campaign, ivr, survey, email
    channel: Mapped[str] = mapped_column(String(16), default="smpp")  # smpp (to a bound ESME), upstream, email
    account: Mapped[str | None] = mapped_column(String(32), nullable=True)  # ESME system_id it goes to
    source: Mapped[str] = mapped_column(String(64))
    dest: Mapped[str] = mapped_column(String(320))
    text: Mapped[str] = mapped_column(Text)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(12), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    done_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    campaign_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    correlation: Mapped[str | None] = mapped_column(String(64), nullable=True)  # e.g. the MO message id

    __table_args__ = (
        Index("ix_outbox_due", "state", "channel", "next_attempt_at"),
        Index("ix_outbox_campaign", "campaign_id", "state"),
        Index("ix_outbox_dest", "dest", "created_at"),
    )


class MessageLog(Base):
    """Every MO received and every MT handed to a wire, for audits and reports."""

    __tablename__ = "message_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    direction: Mapped[str] = mapped_column(String(2))  # MO / MT
    channel: Mapped[str] = mapped_column(String(16))  # sms, ussd, email, http, ivr
    account: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str] = mapped_column(String(320))
    dest: Mapped[str] = mapped_column(String(320))
    text: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str | None] = mapped_column(String(32), nullable=True)  # router action for MO

    # message_id: query_sm answers for a logged MO by an index lookup, never a scan
    __table_args__ = (Index("ix_message_log_source_at", "source", "at"),
                      Index("ix_message_log_message_id", "message_id"))


class UpstreamPart(Base):
    """The SMSC's message id of one part sent upstream, so a receipt finds its outbox row after a restart.

    ``smsc_id`` is normalised (:func:`gateway.receipts.norm_id`). ``ok``/``stat`` hold a part's receipt
    while other parts of its message wait for theirs. Rows go when the message's last receipt is in, or
    at ``expires_at`` (sent + ``smpp.validity``: an SMSC reports within its validity period).
    """

    __tablename__ = "upstream_parts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    smsc_id: Mapped[str] = mapped_column(String(72))
    message_id: Mapped[str] = mapped_column(String(64))
    part: Mapped[int] = mapped_column(Integer)
    parts: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    stat: Mapped[str | None] = mapped_column(String(8), nullable=True)
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_upstream_parts_smsc_id", "smsc_id"),
                      Index("ix_upstream_parts_message", "message_id", "part"))


class PendingPart(Base):
    """A part of a long MO that was acknowledged before the rest arrived: kept until the message is
    whole (deleted in the commit that logs it) or expired, and reloaded into the reassembler on start."""

    __tablename__ = "pending_parts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(80))  # whose reassembler: smpp:<instance> or upstream:<instance>
    sender: Mapped[str] = mapped_column(String(65))
    recipient: Mapped[str] = mapped_column(String(65))
    ref: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    data_coding: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # user data without the UDH
    message_id: Mapped[str] = mapped_column(String(64))  # given in this part's submit_sm_resp
    registered: Mapped[int] = mapped_column(Integer)  # registered_delivery & 3 of this part
    received_at: Mapped[float] = mapped_column(Float)  # arrival; the oldest of a message restarts its reassembly clock

    __table_args__ = (Index("ix_pending_parts_message", "channel", "sender", "recipient", "ref", "total"),)


class Account(Base):
    """An SMPP account (ESME) that may bind to the gateway. Passwords are stored as scrypt hashes."""

    __tablename__ = "accounts"

    system_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    bind_types: Mapped[list[str]] = mapped_column(JSON)  # subset of tx, rx, trx
    max_binds: Mapped[int] = mapped_column(Integer, default=4)
    rate: Mapped[float] = mapped_column(Float, default=500.0)
    source_ranges: Mapped[list[str]] = mapped_column(JSON, default=list)  # regexes of allowed source_addr
    ip_allow: Mapped[list[str]] = mapped_column(JSON, default=list)  # CIDRs; empty = any
    receives_service_sms: Mapped[int] = mapped_column(Integer, default=0)  # IVR / campaign SMS go here


class OpsToken(Base):
    """Bearer tokens for ops writes, stored as SHA-256 hex digests."""

    __tablename__ = "ops_tokens"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)


class FixtureSetRow(Base):
    """Each fixture set loaded, whole, so a restart serves exactly what ops loaded last."""

    __tablename__ = "fixture_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    loaded_at: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(200))
    files: Mapped[dict[str, str]] = mapped_column(JSON)
    counts: Mapped[dict[str, int]] = mapped_column(JSON)

    @classmethod
    def latest(cls, session: Session) -> FixtureSetRow | None:
        """The fixture set loaded last (what a restart serves), or None when none was ever loaded."""
        return session.scalars(select(cls).order_by(cls.id.desc()).limit(1)).first()


class Survey(Base):
    """One survey offered after an agent call (by SMS or on the IVR); ``score`` None until answered."""

    __tablename__ = "ivr_surveys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(200))
    msisdn: Mapped[str] = mapped_column(String(64))
    agent: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(8))  # sms / ivr
    sent_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    answered_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_ivr_surveys_msisdn_sent", "msisdn", "sent_at"),)
