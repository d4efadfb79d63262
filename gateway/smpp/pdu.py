"""SMPP 3.4 PDU codec: a declarative field table per command, `encode`, `decode` and `Framer`.

Representation (``PDU``):

- ``params``: the mandatory parameters by spec name. C-Octet strings are ``str`` (decoded
  as latin-1, so every byte survives a round trip), integers are ``int``, ``short_message``
  is ``bytes``. Length fields (``sm_length``, ``number_of_dests``, ``no_unsuccess``) are not
  stored: the encoder derives them and the decoder checks them. submit_multi's
  ``dest_address`` is a list of dicts (``{"dest_flag": 1, "dest_addr_ton", "dest_addr_npi",
  "destination_addr"}`` or ``{"dest_flag": 2, "dl_name"}``); submit_multi_resp's
  ``unsuccess_sme`` a list of ``{"dest_addr_ton", "dest_addr_npi", "destination_addr",
  "error_status_code"}``.
- ``tlvs``: optional parameters keyed by their integer tag (``Tag`` members work as keys).
  Integer TLVs are ``int`` (``its_session_info`` too: session number in the high octet,
  sequence and end-of-session bit in the low octet); ``receipted_message_id`` and
  ``additional_status_info_text`` are ``str`` without the NUL; every other tag, including
  unknown and vendor tags (which SMPP 3.4 says to ignore, so we keep them), is raw ``bytes``.
  A tag given twice keeps the last value.
- Responses may stop at any mandatory-field boundary: SMPP 3.4 omits the body of a
  response whose command_status is non-zero, so such a PDU has an empty ``params``; read
  response params with ``.get``. A body that fails to decode on an error response is
  dropped, because the status is what the receiver needs. Requests are decoded strictly.

Values are treated as read-only; the dataclass is frozen but the mappings are plain dicts
for speed.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .constants import RESPONSE_BIT, CommandId, Tag
from .constants import CommandStatus as S
from .errors import (
    EncodeError,
    InvalidCommandId,
    InvalidCommandLength,
    InvalidDestFlag,
    InvalidMessageLength,
    InvalidNumberOfDests,
    InvalidParameter,
    InvalidTLVLength,
    InvalidTLVStream,
    SMPPError,
    TruncatedPDU,
)

__all__ = [
    "DEFAULT_MAX_PDU_SIZE",
    "HEADER_SIZE",
    "PDU",
    "CommandSpec",
    "Framer",
    "command_spec",
    "decode",
    "encode",
]

HEADER_SIZE = 16
DEFAULT_MAX_PDU_SIZE = 64 * 1024
_HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")
_U32 = struct.Struct(">I")


# --- field types -------------------------------------------------------------------------
# Each field decodes itself from data[pos:end] into `params` and returns the new position;
# decode() guarantees pos < end before calling, so one-octet reads need no bounds check.


class _Int1:
    __slots__ = ("name",)
    default = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def decode(self, data: bytes, pos: int, end: int, params: dict) -> int:
        params[self.name] = data[pos]
        return pos + 1

    def encode(self, params: Mapping[str, Any], out: bytearray) -> None:
        out.append(params[self.name])


class _CString:
    """C-Octet String of at most `max` octets including the NUL (the spec's "Var. max N")."""

    __slots__ = ("name", "max", "status", "fixed")
    default = ""

    def __init__(self, name: str, max: int, status: int = S.ESME_RINVPARLEN, fixed: int = 0) -> None:
        self.name = name
        self.max = max
        self.status = status
        self.fixed = fixed  # dates are "Fixed 1 or 17": empty or exactly 16 characters

    def decode(self, data: bytes, pos: int, end: int, params: dict) -> int:
        limit = pos + self.max
        nul = data.find(b"\0", pos, limit if limit < end else end)
        if nul < 0:
            raise InvalidParameter(
                f"{self.name}: no NUL within {self.max} octets", command_status=self.status
            )
        if self.fixed and nul != pos and nul - pos != self.fixed:
            raise InvalidParameter(
                f"{self.name}: must be empty or {self.fixed} characters", command_status=self.status
            )
        params[self.name] = data[pos:nul].decode("latin-1")
        return nul + 1

    def encode(self, params: Mapping[str, Any], out: bytearray) -> None:
        value = params[self.name]
        if not value:  # most optional strings (service_type, dates, ...) are empty
            if value is None:
                raise EncodeError(f"{self.name}: None is not a C-Octet string")
            out.append(0)
            return
        raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        if len(raw) >= self.max or b"\0" in raw:
            raise EncodeError(f"{self.name}: at most {self.max - 1} octets and no NUL, got {raw!r}")
        if self.fixed and raw and len(raw) != self.fixed:
            raise EncodeError(f"{self.name}: must be empty or {self.fixed} characters, got {raw!r}")
        out += raw
        out.append(0)


class _ShortMessage:
    """sm_length (Integer 1) followed by that many octets of short_message (0..254)."""

    __slots__ = ()
    name = "short_message"
    default = b""

    def decode(self, data: bytes, pos: int, end: int, params: dict) -> int:
        length = data[pos]
        pos += 1
        if length > 254 or pos + length > end:
            raise InvalidMessageLength(f"sm_length {length} exceeds 254 or the {end - pos} octets left")
        params["short_message"] = data[pos : pos + length]
        return pos + length

    def encode(self, params: Mapping[str, Any], out: bytearray) -> None:
        message = params["short_message"]
        if len(message) > 254:
            raise EncodeError("short_message longer than 254 octets: send it in message_payload")
        out.append(len(message))
        out += message


def _decode_all(fields: Sequence, data: bytes, pos: int, end: int, params: dict) -> int:
    for f in fields:
        if pos >= end:
            raise TruncatedPDU(f"PDU ends before {f.name}")
        pos = f.decode(data, pos, end, params)
    return pos


class _Int4:
    __slots__ = ("name",)
    default = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def decode(self, data: bytes, pos: int, end: int, params: dict) -> int:
        if pos + 4 > end:
            raise TruncatedPDU(f"PDU ends inside {self.name}")
        params[self.name] = _U32.unpack_from(data, pos)[0]
        return pos + 4

    def encode(self, params: Mapping[str, Any], out: bytearray) -> None:
        out += _U32.pack(params[self.name])


_SME_ADDRESS = (
    _Int1("dest_addr_ton"),
    _Int1("dest_addr_npi"),
    _CString("destination_addr", 21, S.ESME_RINVDSTADR),
)
_DL_NAME = (_CString("dl_name", 21, S.ESME_RINVDLNAME),)
_SME_DEFAULTS = {"dest_addr_ton": 0, "dest_addr_npi": 0}


class _DestAddresses:
    """submit_multi: number_of_dests, then per destination a dest_flag and an SME address or dl_name."""

    __slots__ = ()
    name = "dest_address"
    default: list = []

    def decode(self, data: bytes, pos: int, end: int, params: dict) -> int:
        count = data[pos]
        pos += 1
        if not 1 <= count <= 254:
            raise InvalidNumberOfDests(f"number_of_dests {count} outside 1..254")
        dests = []
        for _ in range(count):
            if pos >= end:
                raise TruncatedPDU("PDU ends before dest_flag")
            flag = data[pos]
            if flag not in (1, 2):
                raise InvalidDestFlag(f"dest_flag {flag} is neither 1 (SME) nor 2 (distribution list)")
            entry = {"dest_flag": flag}
            pos = _decode_all(_SME_ADDRESS if flag == 1 else _DL_NAME, data, pos + 1, end, entry)
            dests.append(entry)
        params["dest_address"] = dests
        return pos

    @staticmethod
    def normalize(dests: Sequence[Mapping[str, Any]]) -> list:
        """Complete each entry: dest_flag inferred from the keys, TON/NPI defaulting to 0."""
        complete = []
        for entry in dests:
            flag = entry.get("dest_flag", 2 if "dl_name" in entry else 1)
            complete.append(
                {"dest_flag": flag, **_SME_DEFAULTS, **entry} if flag == 1 else {"dest_flag": 2, **entry}
            )
        return complete

    def encode(self, params: Mapping[str, Any], out: bytearray) -> None:
        dests = self.normalize(params["dest_address"])
        if not 1 <= len(dests) <= 254:
            raise EncodeError(f"submit_multi needs 1..254 destinations, got {len(dests)}")
        out.append(len(dests))
        for entry in dests:
            out.append(entry["dest_flag"])
            for f in _SME_ADDRESS if entry["dest_flag"] == 1 else _DL_NAME:
                f.encode(entry, out)


_UNSUCCESS_SME = (*_SME_ADDRESS, _Int4("error_status_code"))


class _UnsuccessSmes:
    """submit_multi_resp: no_unsuccess, then per failed destination its address and error status."""

    __slots__ = ()
    name = "unsuccess_sme"
    default: list = []

    def decode(self, data: bytes, pos: int, end: int, params: dict) -> int:
        count = data[pos]
        pos += 1
        failures = []
        for _ in range(count):
            entry: dict = {}
            pos = _decode_all(_UNSUCCESS_SME, data, pos, end, entry)
            failures.append(entry)
        params["unsuccess_sme"] = failures
        return pos

    @staticmethod
    def normalize(failures: Sequence[Mapping[str, Any]]) -> list:
        return [{**_SME_DEFAULTS, **entry} for entry in failures]

    def encode(self, params: Mapping[str, Any], out: bytearray) -> None:
        failures = self.normalize(params["unsuccess_sme"])
        if len(failures) > 255:
            raise EncodeError("submit_multi_resp holds at most 255 unsuccessful destinations")
        out.append(len(failures))
        for entry in failures:
            for f in _UNSUCCESS_SME:
                f.encode(entry, out)


# --- the command table (SMPP 3.4 chapter 4) ----------------------------------------------

_system_id = _CString("system_id", 16, S.ESME_RINVSYSID)
_password = _CString("password", 9, S.ESME_RINVPASWD)
_service_type = _CString("service_type", 6, S.ESME_RINVSERTYP)
_message_id = _CString("message_id", 65, S.ESME_RINVMSGID)
_source = (_Int1("source_addr_ton"), _Int1("source_addr_npi"), _CString("source_addr", 21, S.ESME_RINVSRCADR))
_dest = (_Int1("dest_addr_ton"), _Int1("dest_addr_npi"), _CString("destination_addr", 21, S.ESME_RINVDSTADR))
_schedule = _CString("schedule_delivery_time", 17, S.ESME_RINVSCHED, fixed=16)
_validity = _CString("validity_period", 17, S.ESME_RINVEXPIRY, fixed=16)
_message_tail = (
    _Int1("esm_class"),
    _Int1("protocol_id"),
    _Int1("priority_flag"),
    _schedule,
    _validity,
    _Int1("registered_delivery"),
    _Int1("replace_if_present_flag"),
    _Int1("data_coding"),
    _Int1("sm_default_msg_id"),
    _ShortMessage(),
)
_bind = (
    _system_id,
    _password,
    _CString("system_type", 13, S.ESME_RINVSYSTYP),
    _Int1("interface_version"),
    _Int1("addr_ton"),
    _Int1("addr_npi"),
    _CString("address_range", 41),
)

_FIELDS: dict[str, tuple] = {
    "generic_nack": (),
    "bind_receiver": _bind,
    "bind_receiver_resp": (_system_id,),
    "bind_transmitter": _bind,
    "bind_transmitter_resp": (_system_id,),
    "bind_transceiver": _bind,
    "bind_transceiver_resp": (_system_id,),
    "outbind": (_system_id, _password),
    "unbind": (),
    "unbind_resp": (),
    "enquire_link": (),
    "enquire_link_resp": (),
    "submit_sm": (_service_type, *_source, *_dest, *_message_tail),
    "submit_sm_resp": (_message_id,),
    "submit_multi": (_service_type, *_source, _DestAddresses(), *_message_tail),
    "submit_multi_resp": (_message_id, _UnsuccessSmes()),
    "deliver_sm": (_service_type, *_source, *_dest, *_message_tail),
    "deliver_sm_resp": (_message_id,),
    "data_sm": (
        _service_type,
        _Int1("source_addr_ton"),
        _Int1("source_addr_npi"),
        _CString("source_addr", 65, S.ESME_RINVSRCADR),
        _Int1("dest_addr_ton"),
        _Int1("dest_addr_npi"),
        _CString("destination_addr", 65, S.ESME_RINVDSTADR),
        _Int1("esm_class"),
        _Int1("registered_delivery"),
        _Int1("data_coding"),
    ),
    "data_sm_resp": (_message_id,),
    "query_sm": (_message_id, *_source),
    "query_sm_resp": (
        _message_id,
        _CString("final_date", 17, fixed=16),
        _Int1("message_state"),
        _Int1("error_code"),
    ),
    "cancel_sm": (_service_type, _message_id, *_source, *_dest),
    "cancel_sm_resp": (),
    "replace_sm": (
        _message_id,
        *_source,
        _schedule,
        _validity,
        _Int1("registered_delivery"),
        _Int1("sm_default_msg_id"),
        _ShortMessage(),
    ),
    "replace_sm_resp": (),
    "alert_notification": (
        _Int1("source_addr_ton"),
        _Int1("source_addr_npi"),
        _CString("source_addr", 65, S.ESME_RINVSRCADR),
        _Int1("esme_addr_ton"),
        _Int1("esme_addr_npi"),
        _CString("esme_addr", 65, S.ESME_RINVDSTADR),
    ),
}

# Requests the peer never answers (generic_nack is itself a response).
_NO_RESPONSE = frozenset({"outbind", "alert_notification"})

# TLV value types: an int is an unsigned integer of that many octets.
_OCTETS = 0
_CSTRING = -1
_TLV_TYPES: dict[int, int] = {
    Tag.dest_addr_subunit: 1,
    Tag.dest_network_type: 1,
    Tag.dest_bearer_type: 1,
    Tag.dest_telematics_id: 2,
    Tag.source_addr_subunit: 1,
    Tag.source_network_type: 1,
    Tag.source_bearer_type: 1,
    Tag.source_telematics_id: 2,
    Tag.qos_time_to_live: 4,
    Tag.payload_type: 1,
    Tag.additional_status_info_text: _CSTRING,
    Tag.receipted_message_id: _CSTRING,
    Tag.ms_msg_wait_facilities: 1,
    Tag.privacy_indicator: 1,
    Tag.user_message_reference: 2,
    Tag.user_response_code: 1,
    Tag.source_port: 2,
    Tag.destination_port: 2,
    Tag.sar_msg_ref_num: 2,
    Tag.language_indicator: 1,
    Tag.sar_total_segments: 1,
    Tag.sar_segment_seqnum: 1,
    Tag.sc_interface_version: 1,
    Tag.callback_num_pres_ind: 1,
    Tag.number_of_messages: 1,
    Tag.dpf_result: 1,
    Tag.set_dpf: 1,
    Tag.ms_availability_status: 1,
    Tag.delivery_failure_reason: 1,
    Tag.more_messages_to_send: 1,
    Tag.message_state: 1,
    Tag.ussd_service_op: 1,
    Tag.display_time: 1,
    Tag.sms_signal: 2,
    Tag.ms_validity: 1,
    Tag.its_reply_type: 1,
    Tag.its_session_info: 2,
}


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One row of the command table."""

    name: str
    command_id: int
    fields: tuple
    response_name: str | None  # the _resp command answering this request, if any

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)


def _build_specs() -> dict[int, CommandSpec]:
    specs = {}
    for cid in CommandId:
        name = cid.name
        response = f"{name}_resp"
        answered = not cid & RESPONSE_BIT and name not in _NO_RESPONSE
        specs[int(cid)] = CommandSpec(name, int(cid), _FIELDS[name], response if answered else None)
    return specs


_SPECS = _build_specs()
_SPECS_BY_NAME = {spec.name: spec for spec in _SPECS.values()}
_NAMES = {command_id: spec.name for command_id, spec in _SPECS.items()}
_DEFAULTS = {spec.name: {f.name: f.default for f in spec.fields} for spec in _SPECS.values()}
_LIST_FIELDS = {
    spec.name: tuple(f for f in spec.fields if isinstance(f.default, list)) for spec in _SPECS.values()
}


def command_spec(command: str | int) -> CommandSpec:
    """The table row for a command name or id; KeyError if SMPP 3.4 has no such command."""
    return _SPECS_BY_NAME[command] if isinstance(command, str) else _SPECS[command]


# --- PDU -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PDU:
    command_id: int
    sequence_number: int
    command_status: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    tlvs: Mapping[int, Any] = field(default_factory=dict)

    @property
    def command(self) -> str:
        name = _NAMES.get(self.command_id)
        return name if name is not None else f"0x{self.command_id:08x}"

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)

    @property
    def message(self) -> bytes:
        """The user data: the message_payload TLV when present, else short_message."""
        payload = self.tlvs.get(Tag.message_payload)
        return payload if payload is not None else self.params.get("short_message", b"")

    @classmethod
    def make(
        cls,
        command: str,
        sequence_number: int,
        *,
        command_status: int = 0,
        tlvs: Mapping[int, Any] | None = None,
        **params: Any,
    ) -> PDU:
        """Build a PDU by command name; keyword arguments are mandatory params or TLV names.

        Missing mandatory params take their defaults (0, "", b"", []), except that an error
        response given no params has no body, as SMPP 3.4 prescribes.
        """
        spec = _SPECS_BY_NAME.get(command)
        if spec is None:
            raise EncodeError(f"unknown SMPP command {command!r}")
        defaults = _DEFAULTS[command]
        if params and not _LIST_FIELDS[command] and defaults.keys() >= params.keys():
            # the common case, every keyword a mandatory param: one C-level key check, no per-key loop
            return cls(spec.command_id, sequence_number, command_status, {**defaults, **params}, dict(tlvs or {}))
        body, extra = _split_params(spec, params)
        if tlvs:
            extra.update(tlvs)
        if not (spec.is_response and command_status and not body):
            full = dict(_DEFAULTS[command])
            for f in _LIST_FIELDS[command]:
                full[f.name] = f.normalize(body.pop(f.name, ()))
            full.update(body)
            body = full
        return cls(spec.command_id, sequence_number, command_status, body, extra)

    def response(self, status: int = 0, *, tlvs: Mapping[int, Any] | None = None, **params: Any) -> PDU:
        """The matching _resp (same sequence number) with the given status and params."""
        name = _SPECS[self.command_id].response_name if self.command_id in _SPECS else None
        if name is None:
            raise EncodeError(f"{self.command} has no response PDU")
        return PDU.make(name, self.sequence_number, command_status=status, tlvs=tlvs, **params)


def _split_params(spec: CommandSpec, params: Mapping[str, Any]) -> tuple[dict, dict]:
    defaults = _DEFAULTS[spec.name]
    body, tlvs = {}, {}
    for name, value in params.items():
        if name in defaults:
            body[name] = value
        elif name in Tag.__members__:
            tlvs[int(Tag[name])] = value
        else:
            raise EncodeError(f"{spec.name} has no parameter {name!r}")
    return body, tlvs


# --- encode / decode -----------------------------------------------------------------------


def encode(pdu: PDU) -> bytes:
    """Serialise a PDU to one frame; raises EncodeError for values that do not fit."""
    fast = _fast_encode(pdu)
    if fast is not None:
        return fast
    spec = _SPECS.get(pdu.command_id)
    if spec is None:
        raise EncodeError(f"unknown command_id 0x{pdu.command_id:08x}")
    out = bytearray(HEADER_SIZE)
    params = pdu.params
    try:
        if spec.is_response:
            for f in spec.fields:
                if f.name not in params:
                    break
                f.encode(params, out)
        else:
            for f in spec.fields:
                f.encode(params, out)
        if pdu.tlvs:
            _encode_tlvs(pdu.tlvs, out)
        _HEADER.pack_into(out, 0, len(out), pdu.command_id, pdu.command_status, pdu.sequence_number)
    except EncodeError:
        raise
    except KeyError as exc:
        raise EncodeError(f"{spec.name}: missing parameter {exc.args[0]!r}") from exc
    except (ValueError, TypeError, OverflowError, AttributeError, struct.error) as exc:
        raise EncodeError(f"{spec.name}: {exc}") from exc
    return bytes(out)


def _encode_tlvs(tlvs: Mapping[int, Any], out: bytearray) -> None:
    for tag, value in tlvs.items():
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
        else:
            kind = _TLV_TYPES.get(tag, _OCTETS)
            if kind > 0 and isinstance(value, int):
                raw = value.to_bytes(kind, "big")
            elif kind == _CSTRING and isinstance(value, str):
                raw = value.encode("latin-1") + b"\0"
            else:
                raise EncodeError(f"TLV 0x{tag:04x}: cannot encode {type(value).__name__} {value!r}")
        if len(raw) > 0xFFFF:
            raise EncodeError(f"TLV 0x{tag:04x}: value longer than 65535 octets")
        out += _TLV_HEADER.pack(tag, len(raw))
        out += raw


def decode(frame: bytes) -> PDU:
    """Parse one whole frame (as returned by Framer.next_frame) into a PDU.

    Raises an SMPPError subclass whose command_status is the status to answer with and
    whose command_id / sequence_number come from the header.
    """
    if len(frame) < HEADER_SIZE:
        raise InvalidCommandLength(f"frame of {len(frame)} octets is shorter than the header")
    length, command_id, status, sequence = _HEADER.unpack_from(frame)
    if length != len(frame):
        raise InvalidCommandLength(
            f"command_length {length} differs from the frame's {len(frame)} octets",
            command_id=command_id,
            sequence_number=sequence,
        )
    spec = _SPECS.get(command_id)
    if spec is None:
        raise InvalidCommandId(
            f"unknown command_id 0x{command_id:08x}", command_id=command_id, sequence_number=sequence
        )
    try:
        params, tlvs = _fast_decode(command_id, frame, length) or _decode_body(spec, frame, length)
    except SMPPError as exc:
        if spec.is_response and status:
            return PDU(command_id, sequence, status, {}, {})
        exc.command_id = command_id
        exc.sequence_number = sequence
        raise
    return PDU(command_id, sequence, status, params, tlvs)


def _decode_body(spec: CommandSpec, frame: bytes, end: int) -> tuple[dict, dict]:
    params: dict = {}
    pos = HEADER_SIZE
    if spec.is_response:
        for f in spec.fields:
            if pos >= end:
                break
            pos = f.decode(frame, pos, end, params)
    else:
        pos = _decode_all(spec.fields, frame, pos, end, params)
    return params, (_decode_tlvs(frame, pos, end) if pos < end else {})


def _decode_tlvs(data: bytes, pos: int, end: int) -> dict:
    tlvs = {}
    while pos < end:
        if end - pos < 4:
            raise InvalidTLVStream(f"{end - pos} stray octets where a TLV header should be")
        tag, length = _TLV_HEADER.unpack_from(data, pos)
        pos += 4
        stop = pos + length
        if stop > end:
            raise InvalidTLVStream(f"TLV 0x{tag:04x} of length {length} runs past the end of the PDU")
        kind = _TLV_TYPES.get(tag, _OCTETS)
        if kind > 0:
            if length != kind:
                raise InvalidTLVLength(f"TLV 0x{tag:04x} must be {kind} octets, got {length}")
            tlvs[tag] = int.from_bytes(data[pos:stop], "big")
        elif kind == _CSTRING:
            raw = data[pos:stop]
            # Lenient on the NUL: some SMSCs omit it in receipted_message_id.
            tlvs[tag] = (raw[:-1] if raw.endswith(b"\0") else raw).decode("latin-1")
        else:
            tlvs[tag] = data[pos:stop]
        pos = stop
    return tlvs


# --- fast paths for the hot PDUs -------------------------------------------------------------
# submit_sm / deliver_sm and the message_id responses carry nearly all traffic. Their common shape
# (empty dates, well-formed strings) is read and written here without the per-field objects; anything
# unusual returns None (decode) or raises (encode), and the table-driven code above then gives the
# exact answer, error included, so the fast path never changes what a PDU means.

_MESSAGE_KEYS = tuple(f.name for f in _FIELDS["submit_sm"])
_MESSAGE_IDS = frozenset({int(CommandId.submit_sm), int(CommandId.deliver_sm)})
_ID_RESPONSES = frozenset({int(CommandId.submit_sm_resp), int(CommandId.deliver_sm_resp),
                           int(CommandId.data_sm_resp)})


def _fast_decode_message(frame: bytes, end: int) -> tuple[dict, dict] | None:
    """submit_sm / deliver_sm with empty dates, or None to take the table-driven path."""
    find = frame.find
    nul = find(b"\0", 16, min(22, end))  # service_type: Var. max 6
    if nul < 0 or nul + 3 >= end:
        return None
    s_ton, s_npi = frame[nul + 1], frame[nul + 2]
    pos = nul + 3
    src = find(b"\0", pos, min(pos + 21, end))
    if src < 0 or src + 3 >= end:
        return None
    d_ton, d_npi = frame[src + 1], frame[src + 2]
    pos = src + 3
    dst = find(b"\0", pos, min(pos + 21, end))
    if dst < 0 or dst + 10 >= end or frame[dst + 4] or frame[dst + 5]:
        return None
    pos = dst + 1
    esm, pid, prio, _s, _v, reg, rep, dc, dmi, length = frame[pos : pos + 10]
    pos += 10
    stop = pos + length
    if length > 254 or stop > end:
        return None
    params = dict(zip(_MESSAGE_KEYS, (
        frame[16:nul].decode("latin-1"), s_ton, s_npi, frame[nul + 3 : src].decode("latin-1"), d_ton, d_npi,
        frame[src + 3 : dst].decode("latin-1"), esm, pid, prio, "", "", reg, rep, dc, dmi, frame[pos:stop],
    ), strict=True))
    return params, (_decode_tlvs(frame, stop, end) if stop < end else {})


def _fast_decode(command_id: int, frame: bytes, end: int) -> tuple[dict, dict] | None:
    if command_id in _MESSAGE_IDS:
        return _fast_decode_message(frame, end)
    if command_id in _ID_RESPONSES and end > HEADER_SIZE:
        nul = frame.find(b"\0", HEADER_SIZE, min(HEADER_SIZE + 65, end))
        if nul < 0:
            return None
        params = {"message_id": frame[HEADER_SIZE:nul].decode("latin-1")}
        return params, (_decode_tlvs(frame, nul + 1, end) if nul + 1 < end else {})
    return None


def _cstring(value: str, limit: int) -> bytes:
    raw = value.encode("latin-1")
    if len(raw) >= limit or b"\0" in raw:
        raise EncodeError(f"string of {len(raw)} octets over {limit - 1}")
    return raw


def _fast_encode_message(p: Mapping[str, Any]) -> bytearray:
    if p["schedule_delivery_time"] or p["validity_period"]:
        raise EncodeError("dates: the table-driven encoder checks them")
    message = p["short_message"]
    if len(message) > 254:
        raise EncodeError("short_message over 254 octets")
    out = bytearray(HEADER_SIZE)
    out += _cstring(p["service_type"], 6)
    out += bytes((0, p["source_addr_ton"], p["source_addr_npi"]))
    out += _cstring(p["source_addr"], 21)
    out += bytes((0, p["dest_addr_ton"], p["dest_addr_npi"]))
    out += _cstring(p["destination_addr"], 21)
    out += bytes((0, p["esm_class"], p["protocol_id"], p["priority_flag"], 0, 0, p["registered_delivery"],
                  p["replace_if_present_flag"], p["data_coding"], p["sm_default_msg_id"], len(message)))
    out += message
    return out


def _fast_encode(pdu: PDU) -> bytes | None:
    """The frame of a hot PDU, or None when the table-driven encoder must run (or judge an error)."""
    cid = pdu.command_id
    params = pdu.params
    try:
        if cid in _MESSAGE_IDS:
            if len(params) != len(_MESSAGE_KEYS):
                return None
            out = _fast_encode_message(params)
        elif cid in _ID_RESPONSES and len(params) == 1 and "message_id" in params:
            out = bytearray(HEADER_SIZE)
            out += _cstring(params["message_id"], 65)
            out.append(0)
        elif cid in _ID_RESPONSES and not params:
            out = bytearray(HEADER_SIZE)
        else:
            return None
        if pdu.tlvs:
            _encode_tlvs(pdu.tlvs, out)
        _HEADER.pack_into(out, 0, len(out), cid, pdu.command_status, pdu.sequence_number)
    except Exception:  # the table-driven encoder gives the exact EncodeError
        return None
    return bytes(out)


# --- framing -------------------------------------------------------------------------------


class Framer:
    """Splits a byte stream into whole PDU frames using command_length (which counts itself).

    A command_length below 16 or above `max_pdu_size` raises InvalidCommandLength (fatal):
    there is no way to find the next frame boundary, so the connection must be dropped
    after answering generic_nack.
    """

    __slots__ = ("_buffer", "max_pdu_size")

    def __init__(self, max_pdu_size: int = DEFAULT_MAX_PDU_SIZE) -> None:
        self._buffer = bytearray()
        self.max_pdu_size = max_pdu_size

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame, or None until more bytes arrive."""
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        length = _U32.unpack_from(buffer)[0]
        if length < HEADER_SIZE or length > self.max_pdu_size:
            raise InvalidCommandLength(
                f"command_length {length} outside {HEADER_SIZE}..{self.max_pdu_size}",
                sequence_number=_U32.unpack_from(buffer, 12)[0] if len(buffer) >= HEADER_SIZE else None,
            )
        if len(buffer) < length:
            return None
        frame = bytes(buffer[:length])
        del buffer[:length]
        return frame

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as a frame."""
        return len(self._buffer)
