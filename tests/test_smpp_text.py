"""SMS text handling: GSM 03.38 / UCS2 codecs, data_coding, splitting, UDH, reassembly."""

from __future__ import annotations

import itertools
import random

import pytest
import smpplib.gsm
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smpp.text import (
    DC_DEFAULT,
    DC_UCS2,
    ESM_UDHI,
    ConcatError,
    ConcatInfo,
    DecodeError,
    EncodingError,
    Expired,
    Reassembler,
    TooManyParts,
    UdhError,
    UnsupportedDataCoding,
    choose_encoding,
    concat_info_from_tlvs,
    count_parts,
    decode_message,
    encode_text,
    gsm7_decode,
    gsm7_encode,
    gsm7_length,
    gsm7_pack,
    gsm7_unpack,
    parse_udh,
    split_message,
    ucs2_length,
)

# 3GPP TS 23.038 6.2.1, written out independently of the module: code -> character.
GSM_BASIC = {
    0x00: "@", 0x01: "£", 0x02: "$", 0x03: "¥", 0x04: "è", 0x05: "é", 0x06: "ù", 0x07: "ì",
    0x08: "ò", 0x09: "Ç", 0x0A: "\n", 0x0B: "Ø", 0x0C: "ø", 0x0D: "\r", 0x0E: "Å", 0x0F: "å",
    0x10: "Δ", 0x11: "_", 0x12: "Φ", 0x13: "Γ", 0x14: "Λ", 0x15: "Ω", 0x16: "Π", 0x17: "Ψ",
    0x18: "Σ", 0x19: "Θ", 0x1A: "Ξ", 0x1C: "Æ", 0x1D: "æ", 0x1E: "ß", 0x1F: "É",
    0x20: " ", 0x21: "!", 0x22: '"', 0x23: "#", 0x24: "¤", 0x25: "%", 0x26: "&", 0x27: "'",
    0x28: "(", 0x29: ")", 0x2A: "*", 0x2B: "+", 0x2C: ",", 0x2D: "-", 0x2E: ".", 0x2F: "/",
    **{0x30 + i: str(i) for i in range(10)},
    0x3A: ":", 0x3B: ";", 0x3C: "<", 0x3D: "=", 0x3E: ">", 0x3F: "?", 0x40: "¡",
    **{0x41 + i: chr(ord("A") + i) for i in range(26)},
    0x5B: "Ä", 0x5C: "Ö", 0x5D: "Ñ", 0x5E: "Ü", 0x5F: "§", 0x60: "¿",
    **{0x61 + i: chr(ord("a") + i) for i in range(26)},
    0x7B: "ä", 0x7C: "ö", 0x7D: "ñ", 0x7E: "ü", 0x7F: "à",
}  # fmt: skip
GSM_EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}  # fmt: skip
GSM_ALPHABET = "".join(GSM_BASIC.values()) + "".join(GSM_EXTENSION.values())


def body(part) -> bytes:
    """short_message without its UDH."""
    return parse_udh(part.short_message)[1] if part.esm_class & ESM_UDHI else part.short_message


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------------------------------- GSM 03.38


def test_every_basic_character_round_trips_through_its_code():
    assert len(GSM_BASIC) == 127  # all codes but the escape
    for code, char in GSM_BASIC.items():
        assert gsm7_encode(char) == bytes([code]), char
        assert gsm7_decode(bytes([code])) == char
    table = "".join(GSM_BASIC.values())
    assert gsm7_decode(gsm7_encode(table)) == table
    assert gsm7_length(table) == 127


def test_every_extension_character_is_an_escape_sequence():
    for code, char in GSM_EXTENSION.items():
        assert gsm7_encode(char) == bytes([0x1B, code]), char
        assert gsm7_decode(bytes([0x1B, code])) == char
        assert gsm7_length(char) == 2
    text = "price: 5€ {a|b} [x~y] ^\\"
    assert gsm7_decode(gsm7_encode(text)) == text
    assert gsm7_length(text) == len(text) + 9


def test_at_sign_is_septet_zero():
    assert gsm7_encode("@") == b"\x00"
    assert gsm7_encode("a@b.cn") == b"a\x00b.cn"
    assert gsm7_decode(b"\x00\x00") == "@@"
    assert choose_encoding("@") == (DC_DEFAULT, b"\x00")


def test_characters_outside_the_alphabet_are_refused_with_their_position():
    for text, position in (("ab`c", 2), ("garçon", 3), ("退订", 0), ("x\x1b", 1), ("é😀", 1)):
        with pytest.raises(EncodingError) as info:
            gsm7_encode(text)
        assert info.value.position == position
        assert info.value.char == text[position]
        assert "UCS2" in str(info.value)
        assert gsm7_length(text) is None


def test_gsm7_length_counts_septets():
    assert gsm7_length("") == 0
    assert gsm7_length("200") == 3
    assert gsm7_length("{}") == 4
    assert gsm7_length("a€\f") == 5


def test_gsm7_decode_is_tolerant_of_odd_escapes():
    assert gsm7_decode(b"ab\x1b") == "ab"  # trailing lone escape
    assert gsm7_decode(b"\x1b") == ""
    assert gsm7_decode(b"\x1bA") == "A"  # undefined extension code reads as the basic character
    assert gsm7_decode(b"\x1b\x1bx") == " x"  # escape-escape is displayed as a space
    assert gsm7_decode(b"\x1b\x65\x1b\x28\x1b") == "€{"
    with pytest.raises(DecodeError):
        gsm7_decode(b"ab\x80")


@given(st.text(alphabet=GSM_ALPHABET, max_size=400))
def test_gsm7_round_trip(text):
    septets = gsm7_encode(text)
    assert len(septets) == gsm7_length(text)
    assert gsm7_decode(septets) == text
    assert gsm7_unpack(gsm7_pack(septets), len(septets)) == septets


# ------------------------------------------------------------------------------------------- packed 7-bit

# Published vectors: GSM 03.40 PDU tutorials (hellohello), Device::Gsm test suite (quick fox), an
# SMS-SUBMIT walk-through (Hello,my...), libosmocore tests/sms (test text, escapes, concatenation).
PACKED_VECTORS = [
    ("hellohello", "E8329BFD4697D9EC37"),
    (
        "The quick fox jumps over the lazy dog",
        "54741914AFA7C76B90F98D07A9EB6DF81CF4B697E5203ABA0C6287F57910F97D06",
    ),
    ("Hello,my pretty world!", "C8329BFD66B5F320B8BC4CA7E741F7B79C4D0E01"),
    ("test text", "F4F29C0EA297F174"),
    (
        "!$ a more#^- complicated test@@?_%! case",
        "2101280C6ABFE5E5D186D2028DDF6D383B3D0ED3CB6410BD3CA70300BF4829041A87E765",
    ),
    (
        "enhanced ^ {][} test |+~ ^ test",
        "65373AEC1E97C9A00D05B4416D7C1BDE2605A297E774D006B8DAF4401B0A885E9ED301",
    ),
    (
        "enhanced ^ {][} test |+~ ^ tests",
        "65373AEC1E97C9A00D05B4416D7C1BDE2605A297E774D006B8DAF4401B0A885E9ED3E7",
    ),
    ("*100#", "AA180C3602"),
]


@pytest.mark.parametrize(("text", "packed"), PACKED_VECTORS)
def test_packed_vectors(text, packed):
    septets = gsm7_encode(text)
    assert gsm7_pack(septets).hex().upper() == packed
    assert gsm7_decode(gsm7_unpack(bytes.fromhex(packed), len(septets))) == text


OSMOCOM_LONG = (
    "this is a testmessage. this is a testmessage. this is a testmessage. this is a testmessage. "
    "this is a testmessage. this is a testmessage. cut here .....: this is a second testmessage. end here."
)
OSMOCOM_PART1_PACKED = (
    "e8e8f41c949e83c2207a794e6f97e7f3f0b9ec02d1d1e939283d078541f4f29cde2ecfe7e173d905a2a3d373507a0e0a"
    "83e8e539bd5d9ecfc3e7b20b4447a7e7a0f41c1406d1cb737abb3c9f87cf6517888e4ecf41e939280ca297e7f476793e"
    "0f9fcb2e101d9d9e83d2735018442fcfe9edf27c1e3e975da0719d0e4297e56590cbe572b974"
)
OSMOCOM_PART2_PACKED = "4074747a0e4acf4161d0bc3c7ebbc9207a794e6f97e7f3f0b9ec0295dd6410ba2c2fbb00"


def test_split_matches_libosmocore_concatenation_with_fill_bit():
    parts = split_message(OSMOCOM_LONG, ref=0x6F)
    assert [p.short_message[:6].hex() for p in parts] == ["0500036f0201", "0500036f0202"]
    assert parts[0].text.endswith("cut here .....:")
    assert parts[1].text == " this is a second testmessage. end here."
    # After a 6-octet UDH one fill bit aligns the septets: the air-interface packing of our parts.
    assert gsm7_pack(body(parts[0]), fill_bits=1).hex() == OSMOCOM_PART1_PACKED
    assert gsm7_pack(body(parts[1]), fill_bits=1).hex() == OSMOCOM_PART2_PACKED
    assert gsm7_decode(gsm7_unpack(bytes.fromhex(OSMOCOM_PART2_PACKED), 40, fill_bits=1)) == parts[1].text


@given(st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_unpack_round_trip_with_fill_bits(septets, fill_bits):
    packed = gsm7_pack(septets, fill_bits=fill_bits)
    assert len(packed) == -(-(fill_bits + 7 * len(septets)) // 8)
    assert gsm7_unpack(packed, len(septets), fill_bits=fill_bits) == septets


def test_ussd_padding_uses_cr_not_at():
    septets = gsm7_encode("*100#1#")  # 7 septets leave 7 spare bits
    assert gsm7_pack(septets).hex() == "aa180c368a8d00"
    padded = gsm7_pack(septets, ussd=True)
    assert padded.hex() == "aa180c368a8d1a"
    assert gsm7_unpack(padded) == septets + b"\r"  # without the USSD rule the pad is a CR septet
    assert gsm7_unpack(padded, ussd=True) == septets
    assert gsm7_unpack(gsm7_pack(gsm7_encode("*100#")), ussd=True) == gsm7_encode("*100#")


def test_ussd_message_ending_in_cr_on_an_octet_boundary_gets_a_second_cr():
    septets = gsm7_encode("Balance\r")  # 8 septets fill 7 octets exactly
    packed = gsm7_pack(septets, ussd=True)
    assert len(packed) == 8
    assert gsm7_unpack(packed, ussd=True) == septets + b"\r"


def test_pack_and_unpack_validate_their_input():
    with pytest.raises(EncodingError):
        gsm7_pack(b"\x80")
    with pytest.raises(ValueError):
        gsm7_pack(b"a", fill_bits=7)
    with pytest.raises(DecodeError):
        gsm7_unpack(b"\x00", 2)
    assert gsm7_unpack(b"") == b""


# ------------------------------------------------------------------------------------------- UCS2 and data_coding


def test_choose_encoding():
    assert choose_encoding("KT100 Y") == (DC_DEFAULT, b"KT100 Y")
    assert choose_encoding("5€") == (DC_DEFAULT, b"5\x1b\x65")
    assert choose_encoding("退订") == (DC_UCS2, "退订".encode("utf-16-be"))
    assert choose_encoding("garçon") == (DC_UCS2, "garçon".encode("utf-16-be"))
    assert choose_encoding("") == (DC_DEFAULT, b"")
    with pytest.raises(EncodingError):
        choose_encoding("bad \ud800 surrogate")


def test_ucs2_counts_surrogate_pairs_as_two_units():
    assert ucs2_length("中文") == 2
    assert ucs2_length("👍") == 2
    assert "👍".encode("utf-16-be") == bytes.fromhex("d83ddc4d")
    assert decode_message(8, bytes.fromhex("d83ddc4d")) == "👍"


def test_decode_message_by_data_coding():
    assert decode_message(0, b"\x00 KT100") == "@ KT100"
    assert decode_message(1, b"CXYE") == "CXYE"
    assert decode_message(3, "Café".encode("latin-1")) == "Café"
    assert decode_message(8, "退订".encode("utf-16-be")) == "退订"
    assert decode_message(6, "Привет".encode("iso8859-5")) == "Привет"
    assert decode_message(0x0E, "안녕".encode("euc_kr")) == "안녕"


def test_binary_codings_decode_to_latin1_so_octets_survive():
    raw = bytes(range(256))
    for data_coding in (2, 4, 0xF4, 0x14):
        text = decode_message(data_coding, raw)
        assert text.encode("latin-1") == raw
        assert encode_text(data_coding, text) == raw


def test_gsm_dcs_coding_groups():
    assert decode_message(0x10, b"\x00hi") == "@hi"  # class 0 (flash), GSM 7-bit
    assert decode_message(0x18, "闪信".encode("utf-16-be")) == "闪信"  # class 0, UCS2
    assert decode_message(0xF0, b"\x1b\x65") == "€"
    assert decode_message(0xC8, b"\x00") == "@"  # message waiting, discard
    assert decode_message(0xE0, "留言".encode("utf-16-be")) == "留言"  # message waiting, store, UCS2


@pytest.mark.parametrize("data_coding", [5, 9, 0x0B, 0x0D, 0x20, 0x1C, 0x80, 0xBF, 256, -1])
def test_unsupported_data_coding(data_coding):
    with pytest.raises(UnsupportedDataCoding) as info:
        decode_message(data_coding, b"x")
    assert info.value.command_status == 0x45
    with pytest.raises(UnsupportedDataCoding):
        encode_text(data_coding, "x")


def test_eight_bit_text_in_data_coding_zero_is_read_as_utf8_then_latin1():
    assert decode_message(0, "退订".encode()) == "退订"
    assert decode_message(0, "été".encode("latin-1")) == "été"


def test_broken_ucs2_decodes_with_replacement():
    assert decode_message(8, b"\x00a\x00") == "a\ufffd"
    assert decode_message(8, b"\xd8\x3d\x00a") == "\ufffda"


def test_encode_text():
    assert encode_text(0, "a€") == b"a\x1b\x65"
    assert encode_text(3, "Café") == b"Caf\xe9"
    assert encode_text(8, "中") == b"\x4e\x2d"
    with pytest.raises(EncodingError):
        encode_text(1, "Café")
    with pytest.raises(EncodingError):
        encode_text(3, "退订")


@given(st.integers(0, 255), st.binary(max_size=300))
def test_decode_message_never_fails_unexpectedly(data_coding, payload):
    try:
        text = decode_message(data_coding, payload)
    except UnsupportedDataCoding as exc:
        assert exc.data_coding == data_coding
    else:  # every character comes from at least one octet, whatever the coding
        assert len(text) <= len(payload)


# ------------------------------------------------------------------------------------------- splitting


def test_160_septets_is_one_part_161_is_two():
    [single] = split_message("a" * 160, ref=7)
    assert (single.esm_class, single.short_message, single.part_number, single.total) == (0, b"a" * 160, 1, 1)
    first, second = split_message("a" * 161, ref=7)
    assert first.short_message == bytes.fromhex("0500030702 01") + b"a" * 153
    assert second.short_message == bytes.fromhex("0500030702 02") + b"a" * 8
    assert (first.esm_class, first.data_coding, second.text) == (ESM_UDHI, DC_DEFAULT, "a" * 8)


def test_extension_characters_count_twice_against_the_limit():
    assert len(split_message("a" * 158 + "€", ref=0)) == 1  # 160 septets
    assert len(split_message("a" * 159 + "€", ref=0)) == 2  # 161 septets


def test_multipart_boundaries_are_153_septets():
    assert [len(p.text) for p in split_message("a" * 306, ref=0)] == [153, 153]
    assert [len(p.text) for p in split_message("a" * 307, ref=0)] == [153, 153, 1]


def test_escape_sequence_straddling_a_boundary_moves_whole_to_the_next_part():
    text = "a" * 152 + "€" + "b" * 10
    first, second = split_message(text, ref=1)
    assert first.text == "a" * 152 and body(first) == b"a" * 152
    assert second.text == "€" + "b" * 10 and body(second) == b"\x1b\x65" + b"b" * 10
    # with a 16-bit ref a part holds 152 septets, so the '€' (septets 153-154) again moves over
    first16, second16 = split_message(text, ref=1, use_16bit_ref=True)
    assert (first16.text, second16.text) == ("a" * 152, "€" + "b" * 10)
    # an escape that ends exactly on the limit stays
    first, _ = split_message("a" * 151 + "€" + "b" * 10, ref=1)
    assert first.text == "a" * 151 + "€" and len(body(first)) == 153


def test_16bit_reference_udh():
    parts = split_message("x" * 161, ref=0x1234, use_16bit_ref=True)
    assert [p.short_message[:7].hex() for p in parts] == ["06080412340201", "06080412340202"]
    assert [len(p.text) for p in parts] == [152, 9]
    with pytest.raises(ValueError):
        split_message("x", ref=0x10000, use_16bit_ref=True)
    with pytest.raises(ValueError):
        split_message("x", ref=256)


def test_ucs2_70_units_is_one_part_71_is_two():
    [single] = split_message("中" * 70, ref=3)
    assert (single.data_coding, single.esm_class, len(single.short_message)) == (DC_UCS2, 0, 140)
    first, second = split_message("中" * 71, ref=3)
    assert (len(first.text), len(second.text)) == (67, 4)
    assert len(first.short_message) == 6 + 134
    assert decode_message(8, body(first)) + decode_message(8, body(second)) == "中" * 71


def test_surrogate_pair_straddling_67_units_is_never_cut():
    text = "中" * 66 + "😀" + "文" * 5  # the emoji would take units 67 and 68
    first, second = split_message(text, ref=3)
    assert first.text == "中" * 66
    assert second.text == "😀" + "文" * 5
    assert body(second)[:4] == "😀".encode("utf-16-be")
    assert decode_message(8, body(first)) == first.text  # each part stands alone
    first, _ = split_message("中" * 65 + "😀" + "文" * 5, ref=3)
    assert first.text.endswith("😀") and len(body(first)) == 134


def test_chinese_shelf_reply():
    text = "您好！为您推荐：1. 畅享套餐 58元/月，回复KT58订购；2. 10GB流量包 20元，回复KT10订购。" * 3
    parts = split_message(text, ref=9)
    assert {p.data_coding for p in parts} == {DC_UCS2}
    assert "".join(p.text for p in parts) == text
    assert count_parts(text) == ("ucs2", len(parts), len(text))
    assert all(len(p.short_message) <= 140 for p in parts)


def test_255_part_limit():
    parts = split_message("a" * (153 * 255), ref=0)
    assert len(parts) == 255 and parts[-1].short_message[:6].hex() == "05000300ffff"
    with pytest.raises(TooManyParts) as info:
        split_message("a" * (153 * 255 + 1), ref=0)
    assert info.value.command_status == 0x01 and info.value.max_parts == 255
    with pytest.raises(ValueError):
        split_message("a", ref=0, max_parts=256)


def test_max_parts_limit_counts_parts_lost_to_escapes():
    assert len(split_message("a" * 306, ref=0, max_parts=2)) == 2
    with pytest.raises(TooManyParts) as info:
        split_message("a" * 152 + "€" + "a" * 152, ref=0, max_parts=2)  # 306 septets, 3 parts
    assert info.value.parts == 3
    with pytest.raises(TooManyParts):
        split_message("中" * (67 * 3 + 1), ref=0, max_parts=3)
    assert len(split_message("a" * 160, ref=0, max_parts=1)) == 1


def test_count_parts_for_previews():
    assert count_parts("") == ("gsm7", 1, 0)
    assert count_parts("a" * 160) == ("gsm7", 1, 160)
    assert count_parts("a" * 459) == ("gsm7", 3, 459)
    assert count_parts("a" * 460) == ("gsm7", 4, 460)
    assert count_parts("a" * 152 + "€" + "a" * 152) == ("gsm7", 3, 306)
    assert count_parts("中" * 71) == ("ucs2", 2, 71)
    assert count_parts("👍" * 35) == ("ucs2", 1, 70)
    assert count_parts("a" * 152 * 2, use_16bit_ref=True) == ("gsm7", 2, 304)
    assert count_parts("a" * 1_000_000)[1] == 6536  # counts past 255, it never raises


def test_empty_text_is_one_empty_part():
    [part] = split_message("", ref=0)
    assert (part.short_message, part.total, part.data_coding) == (b"", 1, DC_DEFAULT)


long_texts = st.one_of(
    st.text(max_size=400),
    st.text(alphabet=GSM_ALPHABET, min_size=150, max_size=1200),
    st.text(alphabet=st.sampled_from("a€{中😀 "), min_size=60, max_size=800),
)


@settings(max_examples=300, deadline=None)
@given(long_texts, st.booleans(), st.randoms(use_true_random=False))
def test_split_then_reassemble_is_the_original(text, use_16bit_ref, rnd):
    parts = split_message(text, ref=200, use_16bit_ref=use_16bit_ref)
    assert "".join(p.text for p in parts) == text
    assert count_parts(text, use_16bit_ref=use_16bit_ref)[1] == len(parts)
    for part in parts:
        if part.data_coding == DC_DEFAULT:
            assert len(part.short_message) <= 160 and not body(part).endswith(b"\x1b")
        else:
            assert len(part.short_message) <= 140
        assert decode_message(part.data_coding, body(part)) == part.text
    rnd.shuffle(parts)
    reassembler = Reassembler(FakeClock())
    results = [
        reassembler.receive("13800000001", "10086", p.esm_class, p.data_coding, p.short_message)
        for p in parts
    ]
    assert results[-1] == text
    assert all(result is None for result in results[:-1])
    assert len(reassembler) == 0


# ------------------------------------------------------------------------------------------- UDH and SAR


def test_parse_udh_concatenation():
    assert parse_udh(bytes.fromhex("0500030a0302") + b"body") == (ConcatInfo(10, 3, 2, 8), b"body")
    assert parse_udh(bytes.fromhex("0608041234ff01") + b"x") == (ConcatInfo(0x1234, 255, 1, 16), b"x")


def test_parse_udh_skips_other_information_elements():
    # national language single shift (0x24) and a port addressing IE (0x05) around the concat IE
    udh = bytes.fromhex("0e 24010d 05040b8423f0 0003070202")
    assert parse_udh(udh + b"rest") == (ConcatInfo(7, 2, 2, 8), b"rest")
    assert parse_udh(bytes.fromhex("03240101") + b"t") == (None, b"t")
    assert parse_udh(b"\x00abc") == (None, b"abc")


def test_parse_udh_ignores_concat_ie_with_impossible_numbers():
    assert parse_udh(bytes.fromhex("050003010300") + b"a") == (None, b"a")  # seq 0
    assert parse_udh(bytes.fromhex("050003010304") + b"a") == (None, b"a")  # seq > total
    assert parse_udh(bytes.fromhex("050003010000") + b"a") == (None, b"a")  # total 0


@pytest.mark.parametrize(
    "short_message",
    [
        b"",
        bytes.fromhex("05000301"),  # UDHL longer than the message
        bytes.fromhex("0100"),  # IE without length octet
        bytes.fromhex("03000501ff"),  # IE data runs past the UDH
        bytes.fromhex("0400020102"),  # 8-bit concat IE with 2 octets
        bytes.fromhex("050803010201"),  # 16-bit concat IE with 3 octets
    ],
)
def test_malformed_udh_is_a_specific_error(short_message):
    with pytest.raises(UdhError) as info:
        parse_udh(short_message)
    assert info.value.command_status == 0x43


@given(st.binary(max_size=300))
def test_parse_udh_is_robust(data):
    try:
        concat, rest = parse_udh(data)
    except UdhError:
        return
    assert rest == data[1 + data[0] :]
    assert concat is None or 1 <= concat.seq <= concat.total


def test_concat_info_from_sar_tlvs():
    assert concat_info_from_tlvs(None, None, None) is None
    assert concat_info_from_tlvs(0xBEEF, 3, 2) == ConcatInfo(0xBEEF, 3, 2, 16)
    with pytest.raises(ConcatError) as info:
        concat_info_from_tlvs(1, 3, None)
    assert info.value.command_status == 0xC3
    for bad in ((1, 3, 4), (1, 0, 0), (70000, 2, 1), (1, 256, 1)):
        with pytest.raises(ConcatError) as info:
            concat_info_from_tlvs(*bad)
        assert info.value.command_status == 0xC4


# ------------------------------------------------------------------------------------------- reassembly

THREE_PARTS = split_message("x" * 150 + "y" * 153 + "z" * 20, ref=42)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_three_parts_in_every_order(order):
    reassembler = Reassembler(FakeClock())
    results = [
        reassembler.add("13800000001", "10086", 42, 3, i + 1, body(THREE_PARTS[i]), DC_DEFAULT) for i in order
    ]
    assert results == [None, None, "x" * 150 + "y" * 153 + "z" * 20]
    assert len(reassembler) == 0 and reassembler.next_deadline() is None


def test_receive_with_8bit_16bit_udh_and_sar():
    text = "中" * 100
    for use_16bit_ref in (False, True):
        reassembler = Reassembler(FakeClock())
        parts = split_message(text, ref=300 if use_16bit_ref else 30, use_16bit_ref=use_16bit_ref)
        got = [reassembler.receive("a", "10086", ESM_UDHI, DC_UCS2, p.short_message) for p in reversed(parts)]
        assert got == [None, text]
    reassembler = Reassembler(FakeClock())
    got = [
        reassembler.receive("a", "10086", 0, 3, payload, concat_info_from_tlvs(0x0102, 2, seq))
        for seq, payload in ((2, b"world"), (1, b"hello "))
    ]
    assert got == [None, "hello world"]
    assert reassembler.receive("a", "10086", 0, 0, b"200") == "200"


def test_duplicate_parts_are_ignored():
    reassembler = Reassembler(FakeClock())
    assert reassembler.add("s", "r", 1, 3, 1, b"aa", 0) is None
    assert reassembler.add("s", "r", 1, 3, 1, b"aa", 0) is None
    assert reassembler.add("s", "r", 1, 3, 3, b"cc", 0) is None
    assert reassembler.add("s", "r", 1, 3, 2, b"bb", 0) == "aabbcc"
    # the SMSC re-sends a part after completion: still a duplicate, no new pending message
    assert reassembler.add("s", "r", 1, 3, 2, b"bb", 0) is None
    assert len(reassembler) == 0
    # the same ref with different text is a new message
    assert reassembler.add("s", "r", 1, 3, 2, b"BB", 0) is None
    assert len(reassembler) == 1


def test_keys_keep_senders_and_refs_apart():
    reassembler = Reassembler(FakeClock())
    assert reassembler.add("alice", "10086", 5, 2, 1, b"A1", 0) is None
    assert reassembler.add("bob", "10086", 5, 2, 1, b"B1", 0) is None
    assert reassembler.add("alice", "10086", 5, 3, 1, b"C1", 0) is None
    assert reassembler.add("bob", "10086", 5, 2, 2, b"B2", 0) == "B1B2"
    assert reassembler.add("alice", "10086", 5, 2, 2, b"A2", 0) == "A1A2"
    assert len(reassembler) == 1


def test_gsm_escape_cut_between_parts_is_joined_before_decoding():
    # smpplib cuts encoded septets blindly: part 1 ends with ESC, part 2 starts with the code
    septets = gsm7_encode("a" * 152 + "€uro")
    reassembler = Reassembler(FakeClock())
    assert reassembler.add("s", "r", 9, 2, 2, septets[153:], 0) is None
    assert reassembler.add("s", "r", 9, 2, 1, septets[:153], 0) == "a" * 152 + "€uro"


def test_ucs2_surrogate_pair_and_code_unit_cut_between_parts():
    payload = "中文😀ok".encode("utf-16-be")
    for cut in (6, 5):  # after the high surrogate, and in the middle of a code unit
        reassembler = Reassembler(FakeClock())
        assert reassembler.add("s", "r", 1, 2, 1, payload[:cut], 8) is None
        assert reassembler.add("s", "r", 1, 2, 2, payload[cut:], 8) == "中文😀ok"


def test_already_decoded_parts_and_mixed_codings():
    reassembler = Reassembler(FakeClock())
    assert reassembler.add("s", "r", 1, 3, 1, "退", 8) is None
    assert reassembler.add("s", "r", 1, 3, 2, "订".encode("utf-16-be"), 8) is None
    assert reassembler.add("s", "r", 1, 3, 3, b"\x00", 0) == "退订@"
    assert reassembler.add("s", "r", 1, 1, 1, b"single", 3) == "single"


def test_invalid_part_numbers_and_codings_are_refused():
    reassembler = Reassembler(FakeClock())
    with pytest.raises(UnsupportedDataCoding):
        reassembler.add("s", "r", 1, 2, 1, b"x", 5)
    assert reassembler.add("s", "r", 1, 2, 1, bytearray(b"by"), 0) is None
    assert reassembler.add("s", "r", 1, 2, 2, memoryview(b"tes"), 0) == "bytes"
    for ref, total, seq in ((1, 2, 3), (1, 2, 0), (1, 0, 1), (1, 256, 1), (-1, 2, 1), (65536, 2, 1)):
        with pytest.raises(ConcatError):
            reassembler.add("s", "r", ref, total, seq, b"x", 0)


def test_timeout_with_fake_clock():
    clock = FakeClock()
    reassembler = Reassembler(clock, timeout=60.0)
    assert reassembler.next_deadline() is None
    reassembler.add("13800000001", "10086", 7, 3, 1, b"one", 0)
    clock.t += 30
    reassembler.add("13800000001", "10086", 7, 3, 3, b"three", 0)
    reassembler.add("13800000002", "10086", 8, 2, 1, b"other", 0)
    assert reassembler.next_deadline() == 1060.0
    clock.t = 1059.9
    assert reassembler.expire() == []
    clock.t = 1060.0
    assert reassembler.expire() == [Expired("13800000001", "10086", 7, 3, (1, 3), "timeout", 1000.0)]
    assert reassembler.next_deadline() == 1090.0
    # the late middle part starts over rather than completing a message already reported
    assert reassembler.add("13800000001", "10086", 7, 3, 2, b"two", 0) is None
    clock.t = 1200.0
    assert [(e.sender, e.received) for e in reassembler.expire()] == [
        ("13800000002", (1,)),
        ("13800000001", (2,)),
    ]
    assert reassembler.next_deadline() is None and len(reassembler) == 0


def test_completed_messages_are_forgotten_after_the_timeout():
    clock = FakeClock()
    reassembler = Reassembler(clock, timeout=10)
    reassembler.add("s", "r", 1, 2, 1, b"a", 0)
    assert reassembler.add("s", "r", 1, 2, 2, b"b", 0) == "ab"
    clock.t += 10
    reassembler.expire()
    assert reassembler.add("s", "r", 1, 2, 1, b"a", 0) is None
    assert len(reassembler) == 1  # a new message with the same ref and text, not a re-send


def test_max_pending_evicts_the_oldest_and_reports_it():
    clock = FakeClock()
    reassembler = Reassembler(clock, timeout=60, max_pending=2)
    for i in range(3):
        reassembler.add(f"sender{i}", "10086", i, 2, 1, b"part", 0)
        clock.t += 1
    assert len(reassembler) == 2
    assert reassembler.next_deadline() == clock.t  # an eviction waits to be reported
    assert reassembler.expire() == [Expired("sender0", "10086", 0, 2, (1,), "evicted", 1000.0)]
    assert reassembler.next_deadline() == 1061.0
    assert reassembler.add("sender1", "10086", 1, 2, 2, b"two", 0) == "parttwo"


def test_max_bytes_bounds_memory():
    reassembler = Reassembler(FakeClock(), max_bytes=1000)
    for i in range(10):
        reassembler.add("s", "r", i, 2, 1, b"x" * 300, 0)
    assert len(reassembler) == 3
    assert [e.ref for e in reassembler.expire()] == list(range(7))


def test_many_messages_interleaved_in_random_order():
    rnd = random.Random(5)
    texts = {
        f"1380000{n:04d}": "".join(rnd.choice("ab€中😀 ") for _ in range(rnd.randint(1, 600)))
        for n in range(40)
    }
    feed = []
    for n, (sender, text) in enumerate(texts.items()):
        feed += [(sender, p) for p in split_message(text, ref=n % 256)]
    rnd.shuffle(feed)
    reassembler = Reassembler(FakeClock())
    done = {}
    for sender, part in feed:
        result = reassembler.receive(sender, "10086", part.esm_class, part.data_coding, part.short_message)
        if result is not None:
            done[sender] = result
    assert done == texts


@pytest.mark.parametrize("text", ["a" * 152 + "€" + "b" * 30, "退订" * 40 + "😀" * 30, "x" * 500])
def test_reassembles_what_smpplib_sends(text):
    parts, data_coding, esm_class = smpplib.gsm.make_parts(text)
    reassembler = Reassembler(FakeClock())
    results = [reassembler.receive("t", "10086", esm_class, data_coding, part) for part in reversed(parts)]
    assert results[-1] == text and len(parts) > 1
