"""SMPP delivery receipts: the standard text (SMPP 3.4 Appendix B) and the TLV values."""

from __future__ import annotations

import time

STATES = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8,
          "ENROUTE": 1}


def _stamp(at: float) -> str:
    return time.strftime("%y%m%d%H%M", time.gmtime(at))


def receipt_text(message_id: str, *, submitted_at: float, done_at: float, stat: str = "DELIVRD",
                 err: int = 0, text: str = "", sub: int = 1, dlvrd: int | None = None) -> str:
    delivered = (1 if stat == "DELIVRD" else 0) if dlvrd is None else dlvrd
    return (f"id:{message_id} sub:{sub:03d} dlvrd:{delivered:03d} submit date:{_stamp(submitted_at)} "
            f"done date:{_stamp(done_at)} stat:{stat} err:{err:03d} text:{text[:20]}")


def receipt_extra(message_id: str, *, submitted_at: float, done_at: float, stat: str = "DELIVRD",
                  err: int = 0, text: str = "") -> dict:
    """What an outbox row of kind ``receipt`` carries in ``extra``."""
    return {"id": message_id, "state": STATES[stat], "stat": stat,
            "text": receipt_text(message_id, submitted_at=submitted_at, done_at=done_at, stat=stat, err=err,
                                 text=text)}


def parse_receipt(text: str) -> dict[str, str]:
    """``id:.. sub:.. stat:..`` -> dict; tolerant of missing fields and of ``submit date`` spacing."""
    out: dict[str, str] = {}
    normalised = text.replace("submit date:", "submit_date:").replace("done date:", "done_date:")
    head, _, tail = normalised.partition(" text:")
    for token in head.split():
        key, sep, value = token.partition(":")
        if sep:
            out[key.lower()] = value
    if _:
        out["text"] = tail
    return out


def norm_id(smsc_id: str) -> str:
    """An SMSC message id as compared: case, surrounding blanks and leading zeros ignored."""
    return smsc_id.strip().lower().lstrip("0") or "0"


def id_aliases(smsc_id: str) -> list[str]:
    """The same number written in the other base (hex 1A <-> decimal 26), normalised."""
    text = smsc_id.strip()
    out = []
    if text and all(c in "0123456789abcdefABCDEF" for c in text) and len(text) <= 32:
        out.append(norm_id(str(int(text, 16))))
    if text.isdigit() and len(text) <= 40:
        out.append(norm_id(f"{int(text):x}"))
    return [a for a in out if a != norm_id(text)]
