"""Parts of long MO acknowledged before their message is whole, kept in ``pending_parts``.

A transport acknowledges a part only once its row is committed (in the MO pipeline's group
commit), deletes the rows in the commit that logs the whole message (or when the message
expires), and reloads what is left into its Reassembler on start, so a crash between two
parts loses nothing that was acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from gateway.smpp.constants import Tag
from gateway.smpp.text import ConcatInfo, Reassembler, concat_info_from_tlvs
from notifier.models import PendingPart

Write = Callable[[Session], None]


def sar_of(pdu: Any) -> ConcatInfo | None:
    """The SAR TLVs of an MO PDU (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum), if any."""
    tlvs = pdu.tlvs
    return concat_info_from_tlvs(tlvs.get(Tag.sar_msg_ref_num), tlvs.get(Tag.sar_total_segments),
                                 tlvs.get(Tag.sar_segment_seqnum))


@dataclass(frozen=True, slots=True)
class HeldPart:
    """What a transport remembers of a part besides its text: the id it acknowledged it with."""

    message_id: str
    registered: int  # registered_delivery & 3: a receipt is due for this part once the message is whole


class PartStore:
    """The rows of one reassembler. ``channel`` names the transport and the process (``smpp:<instance>``):
    processes sharing a database each take back their own parts when restarted with the same ``--instance``."""

    def __init__(self, channel: str):
        self.channel = channel

    def save(self, sender: str, recipient: str, concat: ConcatInfo, payload: bytes, data_coding: int,
             held: HeldPart, now: float) -> Write:
        values = {"channel": self.channel, "sender": sender, "recipient": recipient, "ref": concat.ref,
                  "total": concat.total, "seq": concat.seq, "data_coding": data_coding, "payload": bytes(payload),
                  "message_id": held.message_id, "registered": held.registered, "received_at": now}
        return lambda session: session.execute(insert(PendingPart.__table__), [values])

    def keep(self, reassembler: Reassembler, sender: str, recipient: str, concat: ConcatInfo, payload: bytes,
             data_coding: int, held: HeldPart, now: float) -> tuple[Write, ...]:
        """The writes that make a part `reassembler` just took durable; none for a copy of a part of a
        message that is already whole (the reassembler ignored it: acknowledge it, keep nothing)."""
        if not reassembler.holds(sender, recipient, concat.ref, concat.total, concat.seq):
            return ()
        return (self.save(sender, recipient, concat, payload, data_coding, held, now),)

    def release_whole(self, sender: str, recipient: str, concat: ConcatInfo | None) -> tuple[Write, ...]:
        """The writes to go with a whole message: delete its kept parts (none for a single SMS)."""
        return () if concat is None else (self.release(sender, recipient, concat.ref, concat.total),)

    def release(self, sender: str, recipient: str, ref: int, total: int) -> Write:
        """Delete the rows of one message (it is whole, or given up)."""
        table = PendingPart.__table__
        query = delete(table).where(table.c.channel == self.channel, table.c.sender == sender,
                                    table.c.recipient == recipient, table.c.ref == ref, table.c.total == total)
        return lambda session: session.execute(query)

    def restore(self, session: Session, reassembler: Reassembler, now: float,
                timeout: float) -> dict[tuple[str, str], list[HeldPart]]:
        """Load this channel's kept parts into ``reassembler`` (oldest first); returns the held ids by
        (sender, recipient). Parts of any channel older than twice ``timeout`` are deleted first: every
        process would have given them up already (those of a process that never came back included)."""
        table = PendingPart.__table__
        session.execute(delete(table).where(table.c.received_at < now - 2 * timeout))
        rows = session.execute(select(table).where(table.c.channel == self.channel)
                               .order_by(table.c.received_at, table.c.id)).all()
        held: dict[tuple[str, str], list[HeldPart]] = {}
        for row in rows:
            reassembler.add(row.sender, row.recipient, row.ref, row.total, row.seq, row.payload, row.data_coding,
                            first_seen=row.received_at)
            held.setdefault((row.sender, row.recipient), []).append(HeldPart(row.message_id, row.registered))
        return held

