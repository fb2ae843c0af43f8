"""WeCom callback crypto: verified vectors, tampering, XML bombs."""

from __future__ import annotations

import base64
import hashlib
import struct
import time

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.platforms.wecom_crypto import (
    WecomCipher,
    WecomCryptoError,
    build_xml,
    parse_xml,
    signature,
    verify_signature,
)

# Vector 1: Tencent's official callback sample.
V1_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
V1_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
V1_CORP = "ww1436e0e65a779aee"
V1_GET_TS = "1476416373"
V1_GET_NONCE = "47744683"
V1_ECHOSTR = (
    "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
)
V1_GET_SIG = "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb"
V1_GET_PLAIN = "1288432023552776189"
V1_POST_TS = "1476422779"
V1_POST_NONCE = "1597212914"
V1_POST_SIG = "0c3914025cb4b4d68103f6bfc8db550f79dcf48e"
V1_ENCRYPT = (
    "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGz"
    "BhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3J"
    "WcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQH"
    "E7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYu"
    "PDGOCI8jmnKiypE+"
)

# Vector 2: wechatpy's tests.
V2_TOKEN = "123456"
V2_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
V2_CORP = "wx49f0ab532d5d035a"
V2_TS = "1411443780"
V2_NONCE = "437374425"
V2_ECHOSTR = (
    "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
)
V2_SIG = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"
V2_PLAIN = "5927782489442352469"

FAST = 0.5  # seconds: a refused XML bomb must cost next to nothing


def v1() -> WecomCipher:
    return WecomCipher(V1_KEY, V1_CORP)


def raw_aes(key_text: str) -> Cipher[modes.CBC]:
    """AES-256-CBC built here from the wire facts, independent of the module under test."""
    key = base64.b64decode(key_text + "=")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def seal(key_text: str, plain: bytes) -> str:
    """Encrypt already padded bytes with the raw cipher, as base64."""
    encryptor = raw_aes(key_text).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def envelope(msg: bytes, receive_id: bytes, *, length: int | None = None) -> bytes:
    body = b"R" * 16 + struct.pack(">I", len(msg) if length is None else length)
    return body + msg + receive_id


def pkcs7_32(data: bytes) -> bytes:
    amount = 32 - len(data) % 32
    return data + bytes([amount]) * amount


def flip(b64: str, index: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# -- the verified vectors ---------------------------------------------------------------


def test_vector1_get_signature_and_echostr() -> None:
    assert signature(V1_TOKEN, V1_GET_TS, V1_GET_NONCE, V1_ECHOSTR) == V1_GET_SIG
    verify_signature(V1_TOKEN, V1_GET_TS, V1_GET_NONCE, V1_ECHOSTR, V1_GET_SIG)
    assert v1().decrypt(V1_ECHOSTR) == V1_GET_PLAIN


def test_vector1_post_signature_and_message() -> None:
    assert signature(V1_TOKEN, V1_POST_TS, V1_POST_NONCE, V1_ENCRYPT) == V1_POST_SIG
    verify_signature(V1_TOKEN, V1_POST_TS, V1_POST_NONCE, V1_ENCRYPT, V1_POST_SIG)
    fields = parse_xml(v1().decrypt(V1_ENCRYPT).encode("utf-8"))
    assert fields["FromUserName"] == "ChenJiaShun"
    assert fields["Content"] == "你好"
    assert fields["MsgId"] == "1456453720"
    assert fields["AgentID"] == "1000002"
    assert fields["MsgType"] == "text"
    assert fields["ToUserName"] == V1_CORP
    assert fields["CreateTime"] == V1_POST_TS


def test_vector1_post_through_the_outer_envelope() -> None:
    body = build_xml({"ToUserName": V1_CORP, "Encrypt": V1_ENCRYPT, "AgentID": 1000002})
    outer = parse_xml(body)
    assert outer == {"ToUserName": V1_CORP, "Encrypt": V1_ENCRYPT, "AgentID": "1000002"}
    verify_signature(V1_TOKEN, V1_POST_TS, V1_POST_NONCE, outer["Encrypt"], V1_POST_SIG)
    assert parse_xml(v1().decrypt(outer["Encrypt"]).encode())["Content"] == "你好"


def test_vector2_signature_and_echostr() -> None:
    assert signature(V2_TOKEN, V2_TS, V2_NONCE, V2_ECHOSTR) == V2_SIG
    verify_signature(V2_TOKEN, V2_TS, V2_NONCE, V2_ECHOSTR, V2_SIG)
    assert WecomCipher(V2_KEY, V2_CORP).decrypt(V2_ECHOSTR) == V2_PLAIN


def test_vectors_decrypt_independently() -> None:
    """The raw AES of this file agrees with the vectors, so the helpers below can be trusted."""
    decryptor = raw_aes(V2_KEY).decryptor()
    plain = decryptor.update(base64.b64decode(V2_ECHOSTR)) + decryptor.finalize()
    plain = plain[: -plain[-1]]
    (length,) = struct.unpack(">I", plain[16:20])
    assert plain[20 : 20 + length].decode() == V2_PLAIN
    assert plain[20 + length :].decode() == V2_CORP


# -- signatures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        V1_GET_SIG[:-1] + "c",
        V1_GET_SIG.upper(),
        V1_GET_SIG[:-1],
        V1_GET_SIG + "0",
        "",
        "签名",
        "\ud800",
    ],
)
def test_tampered_signature_is_refused(bad: str) -> None:
    with pytest.raises(WecomCryptoError) as caught:
        verify_signature(V1_TOKEN, V1_GET_TS, V1_GET_NONCE, V1_ECHOSTR, bad)
    assert caught.value.code == "bad_signature"


@pytest.mark.parametrize("field", range(4))
def test_signature_covers_every_input(field: int) -> None:
    args = [V1_TOKEN, V1_GET_TS, V1_GET_NONCE, V1_ECHOSTR]
    args[field] += "x"
    with pytest.raises(WecomCryptoError) as caught:
        verify_signature(args[0], args[1], args[2], args[3], V1_GET_SIG)
    assert caught.value.code == "bad_signature"


@given(st.lists(st.text(), min_size=4, max_size=4))
def test_signature_matches_an_independent_computation(parts: list[str]) -> None:
    raw = [p.encode("utf-8", "surrogatepass") for p in parts]
    digest = hashlib.new("sha1", usedforsecurity=False)
    for chunk in sorted(raw):  # UTF-8 byte order is code point order
        digest.update(chunk)
    assert signature(*parts) == digest.hexdigest()


@given(st.text(), st.text(), st.text(), st.text(), st.text())
def test_verify_signature_raises_only_its_own_error(
    token: str, ts: str, nonce: str, encrypted: str, sig: str
) -> None:
    try:
        verify_signature(token, ts, nonce, encrypted, sig)
    except WecomCryptoError as exc:
        assert exc.code == "bad_signature"


# -- the cipher -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", "short", V1_KEY[:-1], V1_KEY + "A", V1_KEY[:-1] + "!", "é" * 43]
)
def test_bad_encoding_aes_key_fails_at_construction(key: str) -> None:
    with pytest.raises(ValueError):
        WecomCipher(key, V1_CORP)


def test_wrong_receiveid_is_refused() -> None:
    with pytest.raises(WecomCryptoError) as caught:
        WecomCipher(V1_KEY, "ww0000000000000000").decrypt(V1_ECHOSTR)
    assert caught.value.code == "bad_receiveid"
    foreign = WecomCipher(V1_KEY, "another-corp").encrypt("hello")
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(foreign)
    assert caught.value.code == "bad_receiveid"


@pytest.mark.parametrize("receive_id", [b"", V1_CORP.encode()[:-1], V1_CORP.encode() + b"x"])
def test_receiveid_must_match_exactly(receive_id: bytes) -> None:
    sealed = seal(V1_KEY, pkcs7_32(envelope(b"hello", receive_id)))
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(sealed)
    assert caught.value.code == "bad_receiveid"


@pytest.mark.parametrize("index", range(16, 64))
def test_flipping_a_byte_past_the_first_block_is_refused(index: int) -> None:
    # Block i garbles, and block i+1 takes the flip: the length field, receiveid or padding
    # of the 64-byte echostr always suffers.
    with pytest.raises(WecomCryptoError):
        v1().decrypt(flip(V1_ECHOSTR, index))


@pytest.mark.parametrize("index", range(16))
def test_flipping_a_byte_of_the_first_block_never_goes_unnoticed(index: int) -> None:
    # CBC without a MAC: a flip here edits the length field or a digit of the message.
    # The msg_signature over the ciphertext is what catches this; decrypt only must not lie
    # silently about the receiveid nor raise anything but its own error.
    try:
        plain = v1().decrypt(flip(V1_ECHOSTR, index))
    except WecomCryptoError:
        return
    assert plain != V1_GET_PLAIN
    with pytest.raises(WecomCryptoError):
        verify_signature(V1_TOKEN, V1_GET_TS, V1_GET_NONCE, flip(V1_ECHOSTR, index), V1_GET_SIG)


@pytest.mark.parametrize(
    ("encrypted", "code"),
    [
        ("", "bad_ciphertext"),
        ("!!!!", "bad_ciphertext"),
        ("你好", "bad_ciphertext"),
        (V1_ECHOSTR[:-2], "bad_ciphertext"),  # broken base64 padding
        (V1_ECHOSTR.replace("+", " "), "bad_ciphertext"),  # a query decoded as a form
        (V1_ECHOSTR + "\n", "bad_ciphertext"),
        (base64.b64encode(base64.b64decode(V1_ECHOSTR)[:-1]).decode(), "bad_ciphertext"),
        (base64.b64encode(base64.b64decode(V1_ECHOSTR)[:48]).decode(), "bad_padding"),
        (base64.b64encode(base64.b64decode(V1_ECHOSTR)[:16]).decode(), "bad_padding"),
        (base64.b64encode(b"x" * 15).decode(), "bad_ciphertext"),
        (base64.b64encode(b"x" * 33).decode(), "bad_ciphertext"),
    ],
)
def test_malformed_ciphertext_is_refused(encrypted: str, code: str) -> None:
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(encrypted)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "padded",
    [
        envelope(b"hello", V1_CORP.encode()) + b"\x00" * 5,  # pad value 0
        envelope(b"hello!", V1_CORP.encode()) + b"\x21" * 20,  # 33 > 32
        envelope(b"hello", V1_CORP.encode()) + b"\x04\x05\x05\x05\x05",  # ragged pad bytes
        b"R" * 15 + b"\x20",  # a whole block of padding, but only 16 bytes in all
    ],
)
def test_bad_padding_is_refused(padded: bytes) -> None:
    assert len(padded) % 16 == 0
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(seal(V1_KEY, padded))
    assert caught.value.code == "bad_padding"


def test_full_block_of_padding_is_accepted() -> None:
    body = envelope(b"x" * (64 - 20 - len(V1_CORP)), V1_CORP.encode())
    assert len(body) == 64
    assert v1().decrypt(seal(V1_KEY, pkcs7_32(body))) == "x" * 26
    assert len(base64.b64decode(v1().encrypt("x" * 26))) == 96


@pytest.mark.parametrize("length", [24, 2**31, 2**32 - 1])
def test_insane_length_field_is_refused(length: int) -> None:
    body = envelope(b"hello", V1_CORP.encode(), length=length)
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(seal(V1_KEY, pkcs7_32(body)))
    assert caught.value.code == "bad_ciphertext"


def test_shorter_length_field_leaves_the_receiveid_wrong() -> None:
    body = envelope(b"hello", V1_CORP.encode(), length=4)
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(seal(V1_KEY, pkcs7_32(body)))
    assert caught.value.code == "bad_receiveid"


def test_non_utf8_message_is_refused() -> None:
    body = envelope(b"\xff\xfe", V1_CORP.encode())
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(seal(V1_KEY, pkcs7_32(body)))
    assert caught.value.code == "bad_ciphertext"


def test_header_shorter_than_twenty_bytes_is_refused() -> None:
    with pytest.raises(WecomCryptoError) as caught:
        v1().decrypt(seal(V1_KEY, b"R" * 16 + b"\x10" * 16))
    assert caught.value.code == "bad_ciphertext"


def test_encrypt_matches_the_wire_layout() -> None:
    random16 = bytes(range(16))
    sealed = v1().encrypt("你好", random16=random16)
    decryptor = raw_aes(V1_KEY).decryptor()
    plain = decryptor.update(base64.b64decode(sealed)) + decryptor.finalize()
    expected = random16 + struct.pack(">I", 6) + "你好".encode() + V1_CORP.encode()
    assert plain == pkcs7_32(expected)
    assert v1().encrypt("你好", random16=random16) == sealed  # deterministic given random16
    assert v1().encrypt("你好") != v1().encrypt("你好")  # random by default


def test_encrypt_wants_sixteen_random_bytes() -> None:
    with pytest.raises(ValueError):
        v1().encrypt("x", random16=b"short")


@given(st.text(), st.binary(min_size=16, max_size=16))
def test_encrypt_decrypt_round_trip(plain: str, random16: bytes) -> None:
    cipher = v1()
    assert cipher.decrypt(cipher.encrypt(plain, random16=random16)) == plain
    assert cipher.decrypt(cipher.encrypt(plain)) == plain


def _decrypt_raises_only_its_own_error(encrypted: str) -> None:
    try:
        v1().decrypt(encrypted)
    except WecomCryptoError as exc:
        assert exc.code in {"bad_ciphertext", "bad_padding", "bad_receiveid"}


@given(st.text())
def test_decrypt_of_arbitrary_text_raises_only_its_own_error(encrypted: str) -> None:
    _decrypt_raises_only_its_own_error(encrypted)


@settings(max_examples=300)
@given(st.integers(0, 12).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)))
def test_decrypt_of_arbitrary_blocks_raises_only_its_own_error(raw: bytes) -> None:
    _decrypt_raises_only_its_own_error(base64.b64encode(raw).decode())


@given(st.binary(max_size=200))
def test_decrypt_of_arbitrary_base64_raises_only_its_own_error(raw: bytes) -> None:
    _decrypt_raises_only_its_own_error(base64.b64encode(raw).decode())


# -- XML --------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><Content>&lol9;</Content></xml>"""

QUADRATIC_BLOWUP = (
    b'<!DOCTYPE xml [<!ENTITY a "' + b"x" * 20000 + b'">]><xml><A>' + b"&a;" * 10000 + b"</A></xml>"
)

HOSTILE = {
    "billion_laughs": BILLION_LAUGHS,
    "quadratic_blowup": QUADRATIC_BLOWUP,
    "external_entity": (
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<xml><Content>&xxe;</Content></xml>"
    ),
    "external_dtd": b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/evil.dtd"><xml><A>1</A></xml>',
    "parameter_entity": (
        b'<!DOCTYPE xml [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]><xml/>'
    ),
    "bare_doctype": b"<!DOCTYPE xml><xml><A>1</A></xml>",
    "undeclared_entity": b"<xml><A>&xxe;</A></xml>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_is_refused_fast(name: str) -> None:
    started = time.perf_counter()
    with pytest.raises(WecomCryptoError) as caught:
        parse_xml(HOSTILE[name], max_bytes=1 << 20)
    assert caught.value.code == "bad_xml"
    assert time.perf_counter() - started < FAST


def test_oversized_body_is_refused_before_parsing() -> None:
    body = b"<xml><A><![CDATA[" + b"x" * (64 * 1024) + b"]]></A></xml>"
    started = time.perf_counter()
    with pytest.raises(WecomCryptoError) as caught:
        parse_xml(body)
    assert caught.value.code == "bad_xml"
    assert time.perf_counter() - started < FAST
    assert parse_xml(body, max_bytes=len(body))["A"] == "x" * (64 * 1024)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<xml><A>1</A>",
        b"<xml><A>1</B></xml>",
        b"<root><A>1</A></root>",
        b"<x:xml xmlns:x='urn:x'><A>1</A></x:xml>",
        b"<xml/><xml/>",
        b"<xml><A>1</A><A>2</A></xml>",  # which one was signed? neither
        b'<?xml version="1.0" encoding="bogus"?><xml/>',
        b'<?xml version="1.0" encoding="utf-16"?><xml/>',
        b"<xml>\xff</xml>",
    ],
)
def test_malformed_xml_is_refused(body: bytes) -> None:
    with pytest.raises(WecomCryptoError) as caught:
        parse_xml(body)
    assert caught.value.code == "bad_xml"


def test_parse_xml_reads_wecom_shapes() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<xml>\n'
        b"  <ToUserName><![CDATA[ww1]]></ToUserName>\n"
        b"  <Empty></Empty><Also/>\n"
        b"  <!-- a comment --><CreateTime>1476422779</CreateTime>\n"
        b"  <Content><![CDATA[ a <b> & ]]]]><![CDATA[> ]]></Content>\n"
        b"  <Escaped>&lt;&amp;&gt;</Escaped>\n"
        b"  <SelectedItems><SelectedItem><QuestionKey>q</QuestionKey></SelectedItem>"
        b"</SelectedItems>\n"
        b"</xml>"
    )
    assert parse_xml(body) == {
        "ToUserName": "ww1",
        "Empty": "",
        "Also": "",
        "CreateTime": "1476422779",
        "Content": " a <b> & ]]> ",
        "Escaped": "<&>",
        "SelectedItems": "",
    }


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parse_xml_of_arbitrary_bytes_raises_only_its_own_error(body: bytes) -> None:
    try:
        parse_xml(body)
    except WecomCryptoError as exc:
        assert exc.code == "bad_xml"


XML_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
    | st.sampled_from("\t\n]]>&<")
)


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True),
        XML_TEXT | st.integers(-(2**40), 2**40),
        max_size=8,
    )
)
def test_build_xml_round_trips_through_parse_xml(fields: dict[str, str | int]) -> None:
    assert parse_xml(build_xml(fields)) == {tag: str(value) for tag, value in fields.items()}


def test_build_xml_splits_cdata_terminators() -> None:
    body = build_xml({"A": "x]]>y", "B": 7})
    assert body == b"<xml><A><![CDATA[x]]]]><![CDATA[>y]]></A><B>7</B></xml>"
    assert parse_xml(body) == {"A": "x]]>y", "B": "7"}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"": "x"}, ValueError),
        ({"a b": "x"}, ValueError),
        ({"A>": "x"}, ValueError),
        ({"1A": "x"}, ValueError),
        ({"A": "nul\x00"}, ValueError),
        ({"A": "\ud800"}, ValueError),
        ({"A": True}, TypeError),
        ({"A": 1.5}, TypeError),
    ],
)
def test_build_xml_refuses_what_xml_cannot_carry(fields: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        build_xml(fields)  # type: ignore[arg-type]
