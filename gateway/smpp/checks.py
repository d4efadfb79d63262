"""Field checks of message PDUs (SMPP 3.4 chapters 4 and 5), as one table.

``TABLE[(sender, command)]`` lists, in order, every check a received request of that
command from that sender (``"client"`` = ESME, ``"server"`` = SMSC) must pass: the field,
what is checked, and the command_status its ``_resp`` carries when it fails.
``first_failure`` returns the first failing check; the session turns it into the
refusal (``FieldCheckFailed`` through its one error path), so the application never sees
a refused PDU and nothing is stored for it.

Checks of lengths against the frame (sm_length past the body or over 254, a C-string
longer than its field, a TLV of the wrong size, a schedule/validity time neither empty
nor 16 characters) run earlier, in the decoder (``pdu.py``), with their own statuses.

Every check is a small function of the decoded PDU (a set lookup or a length), and the
verdicts of the field values an ESME sends again and again are remembered (``_Plan``), so
the table costs a few microseconds a submit_sm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from types import MappingProxyType

from .constants import ESME, SMSC, Tag
from .constants import CommandStatus as S
from .pdu import PDU
from .text import is_ucs2, known_data_coding

__all__ = ["TABLE", "Check", "first_failure"]

# 5.2.5 addr_ton: Unknown, International, National, Network Specific, Subscriber Number,
# Alphanumeric, Abbreviated; all other values reserved.
TON = frozenset(range(7))
# 5.2.6 addr_npi: Unknown, ISDN (E163/E164), Data (X.121), Telex (F.69), Land Mobile (E.212),
# National, Private, ERMES, Internet (IP), WAP Client Id; all other values reserved.
NPI = frozenset({0, 1, 3, 4, 6, 8, 9, 10, 14, 18})
# 5.2.12 esm_class bits 5-2, message type. ESME -> SMSC: default, ESME delivery ack, ESME
# manual/user ack. SMSC -> ESME adds SMSC delivery receipt, conversation abort and
# intermediate delivery notification; 0x0C, 0x14, 0x1C and above 0x20 are reserved.
ESME_MESSAGE_TYPES = frozenset({0x00, 0x08, 0x10})
SMSC_MESSAGE_TYPES = frozenset({0x00, 0x04, 0x08, 0x10, 0x18, 0x20})
# 5.2.12 bits 1-0, messaging mode: 0x02 is transaction mode, which submit_sm does not support
# (4.4.1), nor submit_multi (a submit_sm to many); data_sm may use every mode.
SUBMIT_MODES = frozenset({0x00, 0x01, 0x03})
UDHI = 0x40
_MESSAGE_PAYLOAD = int(Tag.message_payload)  # a plain int: hashing an IntEnum member is slow
# Mandatory parameters whose checks read nothing else (see Check.reads_one_field).
_SCALAR_FIELDS = frozenset({
    "source_addr_ton", "source_addr_npi", "dest_addr_ton", "dest_addr_npi", "esm_class", "priority_flag",
    "schedule_delivery_time", "validity_period", "registered_delivery", "replace_if_present_flag", "data_coding",
})
TIME_SIGNS = frozenset("+-R")


@dataclass(frozen=True, slots=True)
class Check:
    field: str  # the field (or fields) checked, spec names
    rule: str  # what must hold, for people and the log
    ok: Callable[[PDU], bool]
    status: int  # the command_status of the refusal

    @property
    def reads_one_field(self) -> bool:
        """Whether `ok` depends on the mandatory parameter `field` alone (so its verdict can be remembered)."""
        return self.field in _SCALAR_FIELDS


def _in(field: str, allowed: frozenset[int]) -> Callable[[PDU], bool]:
    return lambda pdu: pdu.params.get(field, 0) in allowed


def _dests(field: str, allowed: frozenset[int]) -> Callable[[PDU], bool]:
    """submit_multi: the field of every SME destination (dest_flag 1)."""
    return lambda pdu: all(d.get(field, 0) in allowed for d in _sme_dests(pdu))


def _sme_dests(pdu: PDU) -> list:
    return [d for d in pdu.params.get("dest_address", ()) if d["dest_flag"] == 1]


def _dest_addrs_present(pdu: PDU) -> bool:
    return all(d.get("destination_addr") for d in _sme_dests(pdu))


def _dl_names_present(pdu: PDU) -> bool:
    return all(d.get("dl_name") for d in pdu.params.get("dest_address", ()) if d["dest_flag"] == 2)


def _message_type(allowed: frozenset[int]) -> Callable[[PDU], bool]:
    return lambda pdu: (pdu.params.get("esm_class", 0) & 0x3C) in allowed


def _submit_mode(pdu: PDU) -> bool:
    return (pdu.params.get("esm_class", 0) & 0x03) in SUBMIT_MODES


def _udh_fits(pdu: PDU) -> bool:
    """With UDHI set, the user data starts with a UDH whose length octet stays inside it."""
    if not pdu.params.get("esm_class", 0) & UDHI:
        return True
    data = pdu.message
    return bool(data) and data[0] + 1 <= len(data)


def _registered_delivery(pdu: PDU) -> bool:
    """5.2.17: SMSC receipt 0-2 (3 is reserved), SME ack 0-3, intermediate notification bit; bits 7-5 reserved."""
    value = pdu.params.get("registered_delivery", 0)
    return value & 0x03 != 0x03 and not value & 0xE0


def _data_coding(pdu: PDU) -> bool:
    """5.2.19 reserves 0x0B-0x0C and 0x0F-0xBF, but handsets' GSM 03.38 DCS values travel there (USSD's
    0x0F, flash and class-marked 0x10-0x3F, message waiting): taken when the text core decodes them."""
    return known_data_coding(pdu.params.get("data_coding", 0))


def _one_body(pdu: PDU) -> bool:
    """5.3.2.32: short_message and message_payload must not be used together (sm_length 0 with the TLV)."""
    return not (pdu.params.get("short_message") and _MESSAGE_PAYLOAD in pdu.tlvs)


def _ucs2_whole(pdu: PDU) -> bool:
    """UCS2 text is two octets a character: after any UDH, an even number of octets."""
    if not is_ucs2(pdu.params.get("data_coding", 0)):
        return True
    data = pdu.message
    udh = data[0] + 1 if pdu.params.get("esm_class", 0) & UDHI and data else 0
    return (len(data) - udh) % 2 == 0


def _time(field: str) -> Callable[[PDU], bool]:
    """7.1.1: empty, or YYMMDDhhmmsstnnp: absolute (p '+' or '-', nn quarter hours 00-48) or relative ('R')."""

    def ok(pdu: PDU) -> bool:
        value = pdu.params.get(field, "")
        if not value:
            return True
        digits, sign = value[:15], value[15:]
        if not digits.isdigit() or not digits.isascii() or sign not in TIME_SIGNS:
            return False
        if sign == "R":
            return True
        month, day, hour, minute, second = (int(digits[i : i + 2]) for i in range(2, 12, 2))
        return (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 59
                and int(digits[13:15]) <= 48)

    return ok


def _empty(field: str) -> Callable[[PDU], bool]:
    return lambda pdu: not pdu.params.get(field)


def _rows(*rows: tuple[str, str, Callable[[PDU], bool], int]) -> tuple[Check, ...]:
    return tuple(Check(*row) for row in rows)


_SOURCE = (
    ("source_addr_ton", "a TON of 5.2.5", _in("source_addr_ton", TON), S.ESME_RINVSRCTON),
    ("source_addr_npi", "an NPI of 5.2.6", _in("source_addr_npi", NPI), S.ESME_RINVSRCNPI),
)
_DEST = (
    ("dest_addr_ton", "a TON of 5.2.5", _in("dest_addr_ton", TON), S.ESME_RINVDSTTON),
    ("dest_addr_npi", "an NPI of 5.2.6", _in("dest_addr_npi", NPI), S.ESME_RINVDSTNPI),
    ("destination_addr", "not empty", lambda pdu: bool(pdu.params.get("destination_addr")), S.ESME_RINVDSTADR),
)
_MULTI_DEST = (
    ("dest_address.dest_addr_ton", "a TON of 5.2.5", _dests("dest_addr_ton", TON), S.ESME_RINVDSTTON),
    ("dest_address.dest_addr_npi", "an NPI of 5.2.6", _dests("dest_addr_npi", NPI), S.ESME_RINVDSTNPI),
    ("dest_address.destination_addr", "not empty", _dest_addrs_present, S.ESME_RINVDSTADR),
    ("dest_address.dl_name", "not empty", _dl_names_present, S.ESME_RINVDLNAME),
)
_ESME_ESM = (
    ("esm_class", "message type default, delivery ack or user ack",
     _message_type(ESME_MESSAGE_TYPES), S.ESME_RINVESMCLASS),
)
_SUBMIT_ESM = (
    *_ESME_ESM,
    ("esm_class", "messaging mode not transaction", _submit_mode, S.ESME_RINVESMCLASS),
)
_SMSC_ESM = (
    ("esm_class", "a message type of 5.2.12 for SMSC -> ESME", _message_type(SMSC_MESSAGE_TYPES),
     S.ESME_RINVESMCLASS),
)
_TEXT = (
    ("esm_class, short_message", "with UDHI, the UDH length within the user data", _udh_fits,
     S.ESME_RINVESMCLASS),
    ("data_coding, short_message", "UCS2 user data of whole characters (even length)", _ucs2_whole,
     S.ESME_RINVMSGLEN),
)
_ONE_BODY = (  # data_sm has no short_message: its user data is message_payload alone
    # 5.3.2.32 says the two must not be used together but names no status. The message_payload
    # value is what is not acceptable in this PDU: ESME_RINVOPTPARAMVAL (0xC4, SMPP 5.0's
    # ESME_RINVTLVVAL), as public SMPP codecs answer it; not RSYSERR, nothing failed here.
    ("short_message, message_payload", "not both", _one_body, S.ESME_RINVOPTPARAMVAL),
)
# No 3.4 status names a bad data_coding (5.0 added ESME_RINVDCS): a submit the gateway cannot take
# fails with ESME_RSUBMITFAIL, as text.UnsupportedDataCoding says; an ESME refusing an SMSC's PDU
# for content it cannot take answers a permanent application error.
_ESME_DATA_CODING = (("data_coding", "defined and decodable (5.2.19)", _data_coding, S.ESME_RSUBMITFAIL),)
_SMSC_DATA_CODING = (("data_coding", "defined and decodable (5.2.19)", _data_coding, S.ESME_RX_P_APPN),)
_REGISTERED = (
    ("registered_delivery", "receipt 0-2, reserved bits 7-5 clear", _registered_delivery, S.ESME_RINVREGDLVFLG),
)
_SUBMIT_FIELDS = (
    ("priority_flag", "0-3 (5.2.14)", _in("priority_flag", frozenset(range(4))), S.ESME_RINVPRTFLG),
    ("schedule_delivery_time", "empty or a time of 7.1.1", _time("schedule_delivery_time"), S.ESME_RINVSCHED),
    ("validity_period", "empty or a time of 7.1.1", _time("validity_period"), S.ESME_RINVEXPIRY),
    *_REGISTERED,
    ("replace_if_present_flag", "0 or 1 (5.2.18)", _in("replace_if_present_flag", frozenset({0, 1})),
     S.ESME_RINVREPFLAG),
    *_ESME_DATA_CODING,
)

TABLE: Mapping[tuple[str, str], tuple[Check, ...]] = MappingProxyType({
    (ESME, "submit_sm"): _rows(*_SOURCE, *_DEST, *_SUBMIT_ESM, *_SUBMIT_FIELDS, *_ONE_BODY, *_TEXT),
    (ESME, "submit_multi"): _rows(*_SOURCE, *_MULTI_DEST, *_SUBMIT_ESM, *_SUBMIT_FIELDS, *_ONE_BODY, *_TEXT),
    (ESME, "data_sm"): _rows(
        *_SOURCE, *_DEST, *_ESME_ESM, *_REGISTERED, *_ESME_DATA_CODING, *_TEXT,
    ),
    (SMSC, "deliver_sm"): _rows(
        *_SOURCE, *_DEST, *_SMSC_ESM,
        ("priority_flag", "0-3 (5.2.14)", _in("priority_flag", frozenset(range(4))), S.ESME_RINVPRTFLG),
        ("schedule_delivery_time", "empty: unused in deliver_sm (4.6.1)", _empty("schedule_delivery_time"),
         S.ESME_RINVSCHED),
        ("validity_period", "empty: unused in deliver_sm (4.6.1)", _empty("validity_period"), S.ESME_RINVEXPIRY),
        *_REGISTERED,
        ("replace_if_present_flag", "0: unused in deliver_sm (4.6.1)",
         _in("replace_if_present_flag", frozenset({0})), S.ESME_RINVREPFLAG),
        *_SMSC_DATA_CODING, *_ONE_BODY, *_TEXT,
    ),
    (SMSC, "data_sm"): _rows(*_SOURCE, *_DEST, *_SMSC_ESM, *_REGISTERED, *_SMSC_DATA_CODING, *_TEXT),
})  # fmt: skip


class _Plan:
    """The checks of one (sender, command), with the verdicts of recent field-value combinations remembered:
    ESMEs send the same TON/NPI/esm_class/... again and again, so most PDUs pay one tuple lookup for them."""

    __slots__ = ("checks", "field_checks", "message_checks", "signature", "passed")

    MAX_REMEMBERED = 4096

    def __init__(self, checks: tuple[Check, ...]) -> None:
        self.checks = checks
        self.field_checks = tuple(c for c in checks if c.reads_one_field)
        self.message_checks = tuple(c for c in checks if not c.reads_one_field)
        fields = sorted({c.field for c in self.field_checks})
        self.signature = itemgetter(*fields)  # every plan reads several: the signature is a tuple
        self.passed: set[tuple] = set()

    def passes(self, pdu: PDU) -> bool:
        try:
            key = self.signature(pdu.params)
        except KeyError:  # a PDU built without every mandatory parameter
            key = None
        if key is None or key not in self.passed:
            for check in self.field_checks:
                if not check.ok(pdu):
                    return False
            if key is not None:
                if len(self.passed) >= self.MAX_REMEMBERED:
                    self.passed.clear()
                self.passed.add(key)
        for check in self.message_checks:
            if not check.ok(pdu):
                return False
        return True


_PLANS = {key: _Plan(checks) for key, checks in TABLE.items()}


def first_failure(sender: str, pdu: PDU) -> Check | None:
    """The first check of the table a request from ``sender`` fails, or None (also for unchecked commands)."""
    plan = _PLANS.get((sender, pdu.command))
    if plan is None or plan.passes(pdu):
        return None
    return next(c for c in plan.checks if not c.ok(pdu))
