"""SMS text for SMPP: GSM 03.38 and UCS2 codecs, data_coding, UDH concatenation, splitting, reassembly.

Pure functions plus one clock-driven state object (`Reassembler`); no I/O and no PDU knowledge, so the
SMPP session, the USSD code and template previews can all share it.

Conventions this gateway keeps (SMPP 3.4 leaves them to the SMSC):

- data_coding 0 ("SMSC default alphabet") is GSM 03.38 *unpacked*: one septet per octet, escape
  sequences as two octets, UDH octets first with no fill bits. Octets above 0x7F cannot be septets; an
  ESME that sends them with a GSM 7-bit data_coding has put 8-bit text there, so `decode_message`
  reads such a payload as UTF-8, or Latin-1 when it is not valid UTF-8. It only raises for a
  data_coding it does not know.
- data_coding 2 and 4 (octet unspecified) and the 8-bit classes of the GSM DCS groups are binary: they
  decode to Latin-1 text, one character per octet, so `text.encode("latin-1")` gives the exact octets
  back. Callers that log them should print `payload.hex()` instead.
- data_coding 8 is UTF-16BE: characters outside the BMP travel as surrogate pairs and count as two
  units. Broken UTF-16 (odd length, lone surrogate) decodes with U+FFFD rather than failing.
- Splitting never cuts a GSM escape sequence or a surrogate pair. Reassembly joins the raw payloads
  before decoding, so a peer that did cut one (smpplib does, for escapes) still reads correctly.
- Long MO may arrive with a UDH (esm_class 0x40) or with the SAR TLVs: `concat_info_from_tlvs` turns
  sar_msg_ref_num / sar_total_segments / sar_segment_seqnum into the same `ConcatInfo` that
  `parse_udh` returns, and `Reassembler.receive` takes either.

Errors all derive from `TextError`; each carries `command_status`, the SMPP status a session answers
with when the error comes from a peer's PDU.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate

__all__ = [
    "DC_BINARY",
    "DC_BINARY_ALT",
    "DC_DEFAULT",
    "DC_IA5",
    "DC_LATIN1",
    "DC_UCS2",
    "ESM_UDHI",
    "ConcatError",
    "ConcatInfo",
    "DecodeError",
    "EncodingError",
    "Expired",
    "Part",
    "Reassembler",
    "TextError",
    "TooManyParts",
    "UdhError",
    "UnsupportedDataCoding",
    "choose_encoding",
    "concat_info_from_tlvs",
    "count_parts",
    "fits_parts",
    "decode_message",
    "encode_text",
    "gsm7_decode",
    "gsm7_encode",
    "gsm7_length",
    "gsm7_pack",
    "gsm7_unpack",
    "is_ucs2",
    "known_data_coding",
    "parse_udh",
    "split_concat",
    "split_message",
    "ucs2_length",
]

DC_DEFAULT = 0x00  # SMSC default alphabet: GSM 03.38, unpacked
DC_IA5 = 0x01
DC_BINARY_ALT = 0x02
DC_LATIN1 = 0x03
DC_BINARY = 0x04
DC_UCS2 = 0x08

ESM_UDHI = 0x40

# SMPP 3.4 command_status values the errors map to (kept local: this module stands alone).
_ESME_RINVMSGLEN = 0x01
_ESME_RSYSERR = 0x08
_ESME_RINVESMCLASS = 0x43
_ESME_RSUBMITFAIL = 0x45
_ESME_RMISSINGOPTPARAM = 0xC3
_ESME_RINVOPTPARAMVAL = 0xC4

_SMS_OCTETS = 140  # TP-UD capacity of one SMS
_CONCAT_8 = 0x00
_CONCAT_16 = 0x08
_MAX_PARTS = 255  # the part count is one octet in both the UDH and the SAR TLVs


# ---------------------------------------------------------------------------------------------- errors


class TextError(ValueError):
    """Base of every error raised here; `command_status` is the SMPP status it maps to."""

    command_status = _ESME_RSYSERR

    def __init__(self, message: str, *, command_status: int | None = None) -> None:
        super().__init__(message)
        if command_status is not None:
            self.command_status = command_status


class EncodingError(TextError):
    """The text holds a character the requested coding cannot carry."""

    def __init__(self, message: str, *, char: str = "", position: int = -1) -> None:
        super().__init__(message)
        self.char = char
        self.position = position


class DecodeError(TextError):
    """A payload cannot be read in its data_coding."""

    command_status = _ESME_RSUBMITFAIL


class UnsupportedDataCoding(DecodeError):
    """A data_coding this gateway does not read (JIS, pictograms, compressed, reserved)."""

    def __init__(self, data_coding: int) -> None:
        super().__init__(
            f"data_coding 0x{data_coding:02X} is not supported; use 0 (GSM), 3 (Latin-1) or 8 (UCS2)"
        )
        self.data_coding = data_coding


class UdhError(TextError):
    """esm_class says a UDH is present but the header is malformed."""

    command_status = _ESME_RINVESMCLASS


class ConcatError(TextError):
    """Concatenation reference, part count or sequence number out of range, or SAR TLVs incomplete."""

    command_status = _ESME_RINVOPTPARAMVAL


class TooManyParts(TextError):
    """The text needs more SMS parts than allowed."""

    command_status = _ESME_RINVMSGLEN

    def __init__(self, encoding: str, units: int, parts: int, max_parts: int) -> None:
        unit = "septets" if encoding == "gsm7" else "UCS2 units"
        super().__init__(
            f"message of {units} {unit} needs {parts} or more SMS parts, at most {max_parts} allowed; "
            "shorten the text"
        )
        self.encoding = encoding
        self.units = units
        self.parts = parts
        self.max_parts = max_parts


# ------------------------------------------------------------------------------------------- GSM 03.38

_ESC = 0x1B
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
_GSM_EXT_CHARS = "".join(_GSM_EXTENSION.values())
_GSM_EXT_SET = frozenset(_GSM_EXT_CHARS)
# The text character U+001B is not encodable: on the wire it would start an escape sequence.
_GSM_BASIC_SET = frozenset(_GSM_BASIC) - {"\x1b"}
_GSM_SET = _GSM_BASIC_SET | _GSM_EXT_SET

# Encoding is str.translate into septet code points then one ASCII encode: both run in C.
_GSM_ENCODE = str.maketrans({ch: chr(code) for code, ch in enumerate(_GSM_BASIC) if code != _ESC})
_GSM_ENCODE.update(str.maketrans({ch: chr(_ESC) + chr(code) for code, ch in _GSM_EXTENSION.items()}))
_GSM_DECODE = str.maketrans({chr(code): ch for code, ch in enumerate(_GSM_BASIC)})


def gsm7_encode(text: str) -> bytes:
    """Encode text as unpacked GSM 03.38 septets (data_coding 0); extension characters take two octets."""
    if not _GSM_SET.issuperset(text):
        position, char = next((i, ch) for i, ch in enumerate(text) if ch not in _GSM_SET)
        raise EncodingError(
            f"{char!r} (U+{ord(char):04X}) at position {position} is not in the GSM 03.38 alphabet; "
            "send the text as UCS2 (data_coding 8)",
            char=char,
            position=position,
        )
    return _gsm7_bytes(text)


def _gsm7_bytes(text: str) -> bytes:
    """`gsm7_encode` for text already known to be in the alphabet."""
    return text.translate(_GSM_ENCODE).encode("ascii")


def gsm7_decode(septets: bytes) -> str:
    """Decode unpacked GSM 03.38 septets.

    An escape followed by a code the extension table lacks reads as the basic character (23.038
    6.2.1.1); escape-escape reads as a space; a trailing lone escape is dropped.
    """
    if not septets.isascii():
        pos = next(i for i, octet in enumerate(septets) if octet > 0x7F)
        raise DecodeError(f"octet 0x{septets[pos]:02X} at position {pos} is not a GSM 7-bit septet")
    if _ESC not in septets:
        return septets.decode("ascii").translate(_GSM_DECODE)
    out: list[str] = []
    start = 0
    while (esc := septets.find(_ESC, start)) >= 0:
        out.append(septets[start:esc].decode("ascii").translate(_GSM_DECODE))
        if esc + 1 == len(septets):
            return "".join(out)
        code = septets[esc + 1]
        out.append(_GSM_EXTENSION.get(code) or (" " if code == _ESC else _GSM_BASIC[code]))
        start = esc + 2
    out.append(septets[start:].decode("ascii").translate(_GSM_DECODE))
    return "".join(out)


def gsm7_length(text: str) -> int | None:
    """Septets the text takes in GSM 03.38, or None when some character is not in the alphabet."""
    if _GSM_BASIC_SET.issuperset(text):
        return len(text)
    if not _GSM_SET.issuperset(text):
        return None
    return len(text) + sum(map(text.count, _GSM_EXT_CHARS))


def gsm7_pack(septets: bytes, *, fill_bits: int = 0, ussd: bool = False) -> bytes:
    """Pack septets (as `gsm7_encode` returns them) 8 into 7 octets, least significant bit first.

    `fill_bits` zero bits come first (TP-UD after a UDH). With `ussd`, 23.038 6.1.2.3.1 padding
    applies: 7 spare bits become a CR so they don't read as '@', and a message ending in CR on an
    octet boundary gets a second CR.
    """
    if not septets.isascii():
        raise EncodingError("septets must be below 0x80; encode the text with gsm7_encode first")
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    if ussd:
        if (fill_bits + 7 * len(septets)) % 8 == 1:
            septets += b"\r"
        elif septets.endswith(b"\r") and (fill_bits + 7 * len(septets)) % 8 == 0:
            septets += b"\r"
    out = bytearray()
    acc, bits = 0, fill_bits
    for septet in septets:
        acc |= septet << bits
        bits += 7
        if bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc)
    return bytes(out)


def gsm7_unpack(data: bytes, septets: int | None = None, *, fill_bits: int = 0, ussd: bool = False) -> bytes:
    """Unpack octets into septets; `septets` is the count when known (TP-UDL), else every whole septet.

    With `ussd` and no count, a CR filling the last 7 spare bits is padding and is dropped.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0..6, got {fill_bits}")
    available = (8 * len(data) - fill_bits) // 7
    if septets is None:
        count = available
    elif 0 <= septets <= available:
        count = septets
    else:
        raise DecodeError(f"{len(data)} octets hold {available} septets, not {septets}")
    out = bytearray()
    acc = int.from_bytes(data[:1], "little") >> fill_bits
    bits, index = 8 - fill_bits if data else 0, 1
    for _ in range(count):
        if bits < 7:
            acc |= data[index] << bits
            index += 1
            bits += 8
        out.append(acc & 0x7F)
        acc >>= 7
        bits -= 7
    if ussd and septets is None and (fill_bits + 7 * count) % 8 == 0 and out.endswith(b"\r"):
        del out[-1]
    return bytes(out)


# ------------------------------------------------------------------------------------------- UCS2, data_coding


def ucs2_length(text: str) -> int:
    """UTF-16 code units the text takes (characters outside the BMP count twice)."""
    return len(text.encode("utf-16-be", "surrogatepass")) // 2


def _ucs2_encode(text: str) -> bytes:
    try:
        return text.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise EncodingError(
            f"lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start} cannot be sent",
            char=text[exc.start],
            position=exc.start,
        ) from None


_GSM7, _BINARY, _UCS2 = "gsm7", "binary", "ucs2"
_SMPP_ALPHABETS = {
    0x00: _GSM7,
    0x01: "ascii",
    0x02: _BINARY,
    0x03: "latin-1",
    0x04: _BINARY,
    0x06: "iso8859-5",
    0x07: "iso8859-8",
    0x08: _UCS2,
    0x0A: "iso2022_jp",
    0x0E: "euc_kr",
    # Reserved in SMPP 3.4, but GSM 03.38's CBS/USSD "GSM 7-bit, language unspecified", as handsets send USSD.
    0x0F: _GSM7,
}
_DCS_ALPHABET_BITS = (_GSM7, _BINARY, _UCS2, None)


def _alphabet_of(data_coding: int) -> str | None:
    """What a data_coding means: SMPP's own table first, then the GSM 03.38 DCS coding groups."""
    if data_coding < 0x10:
        return _SMPP_ALPHABETS.get(data_coding)
    if data_coding < 0x80:  # general and auto-deletion groups; bit 5 set means compressed
        return None if data_coding & 0x20 else _DCS_ALPHABET_BITS[(data_coding >> 2) & 0x03]
    if data_coding < 0xC0:
        return None
    if data_coding < 0xE0:  # message waiting, discard / store: GSM 7-bit
        return _GSM7
    if data_coding < 0xF0:  # message waiting, store, UCS2
        return _UCS2
    return _BINARY if data_coding & 0x04 else _GSM7


_ALPHABETS = {dc: _alphabet_of(dc) for dc in range(256)}


def known_data_coding(data_coding: int) -> bool:
    """Whether `decode_message` takes this data_coding (SMPP 3.4 values and the GSM 03.38 DCS groups)."""
    return _ALPHABETS.get(data_coding) is not None


def is_ucs2(data_coding: int) -> bool:
    """Whether this data_coding carries UCS2 (two octets a character)."""
    return _ALPHABETS.get(data_coding) == _UCS2


def _decode_default(payload: bytes) -> str:
    if payload.isascii():
        return gsm7_decode(payload)
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


def decode_message(data_coding: int, payload: bytes) -> str:
    """Text of a short_message / message_payload (without UDH) in the given data_coding."""
    alphabet = _ALPHABETS.get(data_coding)
    if alphabet is None:
        raise UnsupportedDataCoding(data_coding)
    if alphabet == _GSM7:
        return _decode_default(payload)
    if alphabet == _UCS2:
        return payload.decode("utf-16-be", "replace")
    if alphabet == _BINARY:
        return payload.decode("latin-1")
    return payload.decode(alphabet, "replace")


def encode_text(data_coding: int, text: str) -> bytes:
    """Encode text for a given data_coding (the inverse of `decode_message`)."""
    alphabet = _ALPHABETS.get(data_coding)
    if alphabet is None:
        raise UnsupportedDataCoding(data_coding)
    if alphabet == _GSM7:
        return gsm7_encode(text)
    if alphabet == _UCS2:
        return _ucs2_encode(text)
    codec = "latin-1" if alphabet == _BINARY else alphabet
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        raise EncodingError(
            f"{char!r} at position {exc.start} cannot be sent with data_coding 0x{data_coding:02X}; "
            "use UCS2 (data_coding 8)",
            char=char,
            position=exc.start,
        ) from None


def choose_encoding(text: str) -> tuple[int, bytes]:
    """GSM 03.38 (data_coding 0) when every character fits, else UCS2 (data_coding 8)."""
    if _GSM_SET.issuperset(text):
        return DC_DEFAULT, _gsm7_bytes(text)
    return DC_UCS2, _ucs2_encode(text)


# ------------------------------------------------------------------------------------------- splitting


@dataclass(frozen=True, slots=True)
class Part:
    """One SMS of a (possibly long) message, ready for submit_sm / deliver_sm."""

    data_coding: int
    esm_class: int  # ESM_UDHI when short_message starts with a UDH
    short_message: bytes
    part_number: int
    total: int
    text: str


_SPLIT_CACHE_SIZE = 4096
_CACHED_TEXT_MAX = 2000  # characters: bounds the cache's memory


def _gsm7_single_and_part(udh_len: int) -> tuple[int, int]:
    return 160, (_SMS_OCTETS - udh_len) * 8 // 7


def _ucs2_single_and_part(udh_len: int) -> tuple[int, int]:
    return 70, (_SMS_OCTETS - udh_len) // 2


def _cut(text: str, costs: list[int], limit: int) -> list[str]:
    """Greedy cut into chunks of at most `limit` units; a character is never split."""
    ends = list(accumulate(costs))
    chunks = []
    start = used = 0
    while start < len(text):
        stop = bisect_right(ends, used + limit, lo=start)
        chunks.append(text[start:stop])
        used = ends[stop - 1]
        start = stop
    return chunks


def _plan(text: str, udh_len: int, max_parts: int | None) -> tuple[int, int, list[str]]:
    """(data_coding, units, chunks); raises TooManyParts early when the text cannot fit at all."""
    if _GSM_SET.issuperset(text):
        data_coding, encoding = DC_DEFAULT, _GSM7
        extended = 0 if _GSM_BASIC_SET.issuperset(text) else sum(map(text.count, _GSM_EXT_CHARS))
        single, per_part = _gsm7_single_and_part(udh_len)
    else:
        data_coding, encoding = DC_UCS2, _UCS2
        extended = ucs2_length(text) - len(text)
        single, per_part = _ucs2_single_and_part(udh_len)
    units = len(text) + extended
    if units <= single:
        return data_coding, units, [text]
    if max_parts is not None and units > max_parts * per_part:
        raise TooManyParts(encoding, units, -(-units // per_part), max_parts)
    if not extended:
        return data_coding, units, [text[i : i + per_part] for i in range(0, len(text), per_part)]
    if encoding == _GSM7:
        costs = [2 if ch in _GSM_EXT_SET else 1 for ch in text]
    else:
        costs = [2 if ch > "\uffff" else 1 for ch in text]
    return data_coding, units, _cut(text, costs, per_part)


def split_message(
    text: str, *, ref: int, max_parts: int = _MAX_PARTS, use_16bit_ref: bool = False
) -> list[Part]:
    """Split text into SMS parts, GSM 03.38 when possible else UCS2, with a concatenation UDH if long.

    One part holds 160 septets / 70 UCS2 units; parts of a long message 153 / 67 (152 / 66 with a
    16-bit reference). `ref` is the concatenation reference (0..255, or 0..65535 with
    `use_16bit_ref`); the caller keeps it distinct per recipient.
    """
    if not 1 <= max_parts <= _MAX_PARTS:
        raise ValueError(f"max_parts must be 1..{_MAX_PARTS}, got {max_parts}")
    if not 0 <= ref <= (0xFFFF if use_16bit_ref else 0xFF):
        raise ValueError(
            f"concatenation reference {ref} out of range for a {16 if use_16bit_ref else 8}-bit ref"
        )
    udh_len = 7 if use_16bit_ref else 6
    planned = _encoded_cached if len(text) <= _CACHED_TEXT_MAX else _encoded
    data_coding, chunks = planned(text, udh_len, max_parts)
    total = len(chunks)
    if total == 1:
        return [Part(data_coding, 0, chunks[0][1], 1, 1, text)]
    if use_16bit_ref:
        header = bytes((6, _CONCAT_16, 4, ref >> 8, ref & 0xFF, total))
    else:
        header = bytes((5, _CONCAT_8, 3, ref, total))
    return [
        Part(data_coding, ESM_UDHI, header + bytes((number,)) + raw, number, total, chunk)
        for number, (chunk, raw) in enumerate(chunks, 1)
    ]


def _encoded(text: str, udh_len: int, max_parts: int) -> tuple[int, tuple[tuple[str, bytes], ...]]:
    """(data_coding, (chunk, its encoded octets) per part); raises TooManyParts."""
    data_coding, units, chunks = _plan(text, udh_len, max_parts)
    if len(chunks) > max_parts:
        raise TooManyParts(_GSM7 if data_coding == DC_DEFAULT else _UCS2, units, len(chunks), max_parts)
    encode = _gsm7_bytes if data_coding == DC_DEFAULT else _ucs2_encode
    return data_coding, tuple((chunk, encode(chunk)) for chunk in chunks)


# Replies repeat (the shelf cache shares one "200" text among many subscribers): plan and encode
# each short text once; only the concatenation header differs per message.
_encoded_cached = lru_cache(maxsize=_SPLIT_CACHE_SIZE)(_encoded)


def count_parts(text: str, *, use_16bit_ref: bool = False) -> tuple[str, int, int]:
    """("gsm7" | "ucs2", SMS parts, septets or UCS2 units) exactly as `split_message` would send it."""
    data_coding, units, chunks = _plan(text, 7 if use_16bit_ref else 6, None)
    return (_GSM7 if data_coding == DC_DEFAULT else _UCS2), len(chunks), units


# ------------------------------------------------------------------------------------------- UDH, SAR


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    """Where one part sits in a concatenated message."""

    ref: int
    total: int
    seq: int
    ref_bits: int = 8


def _concat_ie(iei: int, data: bytes) -> ConcatInfo | None:
    expected = 3 if iei == _CONCAT_8 else 4
    if len(data) != expected:
        raise UdhError(f"concatenation IE 0x{iei:02X} must hold {expected} octets, holds {len(data)}")
    if iei == _CONCAT_8:
        ref, total, seq, bits = data[0], data[1], data[2], 8
    else:
        ref, total, seq, bits = (data[0] << 8) | data[1], data[2], data[3], 16
    if total == 0 or not 1 <= seq <= total:
        return None  # 23.040 9.2.3.24.1: the receiver ignores such an IE
    return ConcatInfo(ref, total, seq, bits)


def parse_udh(short_message: bytes) -> tuple[ConcatInfo | None, bytes]:
    """Split a UDHI short_message into (concatenation info or None, body after the UDH).

    Concatenation IEs 0x00 (8-bit ref) and 0x08 (16-bit ref) are read; the last one wins; other
    IEs are skipped. A header that runs past its own length raises UdhError.
    """
    if not short_message:
        raise UdhError("esm_class has UDHI set but short_message is empty")
    end = 1 + short_message[0]
    if end > len(short_message):
        raise UdhError(f"UDH length {short_message[0]} exceeds the {len(short_message) - 1} octets after it")
    concat = None
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise UdhError(f"information element at UDH offset {pos} has no length octet")
        iei, length = short_message[pos], short_message[pos + 1]
        data_at, pos = pos + 2, pos + 2 + length
        if pos > end:
            raise UdhError(f"information element 0x{iei:02X} of {length} octets runs past the UDH")
        if iei in (_CONCAT_8, _CONCAT_16):
            concat = _concat_ie(iei, short_message[data_at:pos]) or concat
    return concat, short_message[end:]


def _check_concat(ref: int, total: int, seq: int) -> None:
    if not 0 <= ref <= 0xFFFF:
        raise ConcatError(f"concatenation reference {ref} is not 0..65535")
    if not 1 <= total <= _MAX_PARTS:
        raise ConcatError(f"part count {total} is not 1..{_MAX_PARTS}")
    if not 1 <= seq <= total:
        raise ConcatError(f"part number {seq} is not 1..{total}")


def concat_info_from_tlvs(
    sar_msg_ref_num: int | None, sar_total_segments: int | None, sar_segment_seqnum: int | None
) -> ConcatInfo | None:
    """ConcatInfo from the SAR TLVs of a submit_sm / deliver_sm; None when none of them is present.

    SMPP 3.4 5.3.2.22-24: the three travel together; a partial set is ESME_RMISSINGOPTPARAM.
    """
    values = (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum)
    if all(value is None for value in values):
        return None
    if any(value is None for value in values):
        raise ConcatError(
            "sar_msg_ref_num, sar_total_segments and sar_segment_seqnum must all be present",
            command_status=_ESME_RMISSINGOPTPARAM,
        )
    _check_concat(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum)
    return ConcatInfo(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum, 16)


# ------------------------------------------------------------------------------------------- reassembly

_Payload = bytes | str
_Key = tuple[str, str, int, int]


@dataclass(frozen=True, slots=True)
class Expired:
    """An incomplete long message given up on: its sender may be asked to send it again."""

    sender: str
    recipient: str
    ref: int
    total: int
    received: tuple[int, ...]
    reason: str  # "timeout" or "evicted" (over max_pending / max_bytes)
    first_seen: float


@dataclass(slots=True)
class _Pending:
    first_seen: float
    parts: dict[int, tuple[_Payload, int]] = field(default_factory=dict)
    size: int = 0


def _join(parts: list[tuple[_Payload, int]]) -> str:
    """Text of the parts in order; raw octets are joined before decoding so split characters survive."""
    codings = {data_coding for _, data_coding in parts}
    if len(codings) == 1 and not any(isinstance(payload, str) for payload, _ in parts):
        return decode_message(codings.pop(), b"".join(payload for payload, _ in parts))
    return "".join(
        payload if isinstance(payload, str) else decode_message(data_coding, payload)
        for payload, data_coding in parts
    )


class Reassembler:
    """Collects the parts of long MO messages, in any order, into text.

    Keyed by (sender, recipient, ref, total). Call `expire()` when `next_deadline()` passes: it hands
    back what timed out or was evicted to stay within `max_pending` messages / `max_bytes` payload.
    Parts re-sent after their message completed are recognised for `timeout` seconds and ignored.
    The clock must not go backwards: age order is arrival order.
    """

    def __init__(
        self,
        now: Callable[[], float],
        timeout: float = 60.0,
        max_pending: int = 10000,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if timeout <= 0 or max_pending < 1 or max_bytes < 1:
            raise ValueError("timeout, max_pending and max_bytes must be positive")
        self._now = now
        self._timeout = timeout
        self._max_pending = max_pending
        self._max_bytes = max_bytes
        self._pending: dict[_Key, _Pending] = {}
        self._bytes = 0
        self._completed: dict[_Key, tuple[float, dict[int, int]]] = {}
        self._evicted: deque[Expired] = deque(maxlen=max_pending)

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        sender: str,
        recipient: str,
        ref: int,
        total: int,
        seq: int,
        payload: bytes | str,
        data_coding: int,
        first_seen: float | None = None,
    ) -> str | None:
        """Store one part; the whole text once every part is in, else None (also for duplicates).

        ``first_seen`` restores a part kept across a restart (its message's first arrival); parts must
        then be restored oldest message first.
        """
        _check_concat(ref, total, seq)
        if _ALPHABETS.get(data_coding) is None:
            raise UnsupportedDataCoding(data_coding)  # now, not when the last part arrives
        if not isinstance(payload, str):
            payload = bytes(payload)  # hashable, and immune to the caller reusing a buffer
        if total == 1:
            return _join([(payload, data_coding)])
        key = (sender, recipient, ref, total)
        entry = self._pending.get(key)
        if entry is None:
            if self._is_resent(key, seq, payload):
                return None
            entry = self._pending[key] = _Pending(self._now() if first_seen is None else first_seen)
        elif seq in entry.parts:
            return None
        entry.parts[seq] = (payload, data_coding)
        entry.size += len(payload)
        self._bytes += len(payload)
        if len(entry.parts) == total:
            self._drop(key)
            self._remember(key, entry)
            return _join([entry.parts[number] for number in range(1, total + 1)])
        self._enforce_bounds()
        return None

    def receive(
        self,
        sender: str,
        recipient: str,
        esm_class: int,
        data_coding: int,
        short_message: bytes,
        sar: ConcatInfo | None = None,
    ) -> str | None:
        """Feed one MO PDU's text fields: a UDH (esm_class UDHI) or SAR info makes it a part."""
        return self.receive_part(sender, recipient, esm_class, data_coding, short_message, sar)[0]

    def receive_part(
        self,
        sender: str,
        recipient: str,
        esm_class: int,
        data_coding: int,
        short_message: bytes,
        sar: ConcatInfo | None = None,
    ) -> tuple[str | None, ConcatInfo | None, bytes]:
        """`receive`, also returning the part's concatenation info (None for a single SMS) and user data."""
        concat, body = split_concat(esm_class, short_message, sar)
        if concat is None:
            return decode_message(data_coding, body), None, body
        return self.add(sender, recipient, concat.ref, concat.total, concat.seq, body, data_coding), concat, body

    def holds(self, sender: str, recipient: str, ref: int, total: int, seq: int) -> bool:
        """Whether that part is stored, waiting for the rest of its message."""
        entry = self._pending.get((sender, recipient, ref, total))
        return entry is not None and seq in entry.parts

    def expire(self) -> list[Expired]:
        """Incomplete messages older than the timeout, plus any evicted since the last call."""
        now = self._now()
        out = list(self._evicted)
        self._evicted.clear()
        while self._pending:
            key, entry = next(iter(self._pending.items()))
            if now - entry.first_seen < self._timeout:
                break
            self._drop(key)
            out.append(_expired(key, entry, "timeout"))
        self._forget_completed(now)
        return out

    def next_deadline(self) -> float | None:
        """When `expire()` next has something to return; None when nothing is pending."""
        if self._evicted:
            return self._now()
        if not self._pending:
            return None
        return next(iter(self._pending.values())).first_seen + self._timeout

    def _drop(self, key: _Key) -> _Pending:
        entry = self._pending.pop(key)
        self._bytes -= entry.size
        return entry

    def _enforce_bounds(self) -> None:
        while len(self._pending) > self._max_pending or self._bytes > self._max_bytes:
            key = next(iter(self._pending))
            self._evicted.append(_expired(key, self._drop(key), "evicted"))

    def _remember(self, key: _Key, entry: _Pending) -> None:
        now = self._now()
        self._completed.pop(key, None)
        self._completed[key] = (now, {seq: hash(payload) for seq, (payload, _) in entry.parts.items()})
        self._forget_completed(now)
        while len(self._completed) > self._max_pending:
            del self._completed[next(iter(self._completed))]

    def _forget_completed(self, now: float) -> None:
        while self._completed:
            key, (done_at, _) = next(iter(self._completed.items()))
            if now - done_at < self._timeout:
                return
            del self._completed[key]

    def _is_resent(self, key: _Key, seq: int, payload: _Payload) -> bool:
        """A part of a message that already completed, sent again; a different payload is a new message."""
        done = self._completed.get(key)
        if done is None or self._now() - done[0] >= self._timeout:
            return False
        if done[1].get(seq) == hash(payload):
            return True
        del self._completed[key]
        return False


def split_concat(esm_class: int, short_message: bytes, sar: ConcatInfo | None = None) -> tuple[ConcatInfo | None, bytes]:
    """(concatenation info, user data without the UDH) of one MO: from its UDH (esm_class UDHI), else SAR."""
    concat, body = parse_udh(short_message) if esm_class & ESM_UDHI else (None, short_message)
    return concat or sar, body


def _expired(key: _Key, entry: _Pending, reason: str) -> Expired:
    sender, recipient, ref, total = key
    return Expired(sender, recipient, ref, total, tuple(sorted(entry.parts)), reason, entry.first_seen)


def fits_parts(text: str, max_parts: int) -> bool:
    """Whether ``text`` goes out in at most ``max_parts`` SMS (GSM 03.38 when it can, else UCS2)."""
    return count_parts(text)[1] <= max_parts
