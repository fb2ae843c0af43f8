"""WeCom (企业微信) callback crypto: msg_signature, AES-256-CBC message envelopes, flat XML.

Wire facts (docs/platforms/wecom.md; WeCom's "加解密方案说明"):

- msg_signature = sha1 hex of the sorted, concatenated token, timestamp, nonce and the
  encrypted text (echostr on GET, the Encrypt element on POST).
- key = b64decode(EncodingAESKey + "="), 32 bytes; iv = key[:16]; AES-256-CBC.
- plaintext = random16 ‖ uint32_be(len(msg)) ‖ msg ‖ receiveid, PKCS#7-padded to a 32-byte
  block (pad values 1..32). The receiveid is the corp id for a self-built app.

Everything here is pure: no I/O, no clock. Every failure on untrusted input is a
WecomCryptoError whose ``code`` says what was wrong; misuse by the caller (a bad key, a bad
tag name) is a ValueError or TypeError.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Mapping
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as DefusedET
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "BLOCK_SIZE",
    "MAX_XML_BYTES",
    "WecomCipher",
    "WecomCryptoError",
    "build_xml",
    "parse_xml",
    "signature",
    "verify_signature",
]

BLOCK_SIZE = 32  # WeCom's PKCS#7 block, not AES's 16
MAX_XML_BYTES = 64 * 1024
_RANDOM_LEN = 16
_HEADER_LEN = _RANDOM_LEN + 4
_AES_BLOCK = 16
_TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
# Characters XML 1.0 cannot carry at all, not even inside CDATA.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class WecomCryptoError(Exception):
    """A callback that fails a signature, decryption or XML check; ``code`` names which."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate from a mangled query string must not raise here.
    return text.encode("utf-8", "surrogatepass")


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """The msg_signature WeCom sends: sha1 hex of the four strings, sorted and joined."""
    joined = "".join(sorted([token, timestamp, nonce, encrypted]))
    return hashlib.sha1(_utf8(joined), usedforsecurity=False).hexdigest()


def verify_signature(
    token: str, timestamp: str, nonce: str, encrypted: str, msg_signature: str
) -> None:
    """Raise WecomCryptoError("bad_signature") unless msg_signature matches, in constant time."""
    expected = signature(token, timestamp, nonce, encrypted).encode("ascii")
    if not hmac.compare_digest(expected, _utf8(msg_signature)):
        raise WecomCryptoError("bad_signature")


def _pad(data: bytes) -> bytes:
    amount = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes([amount]) * amount


def _unpad(data: bytes) -> bytes:
    if not data:
        raise WecomCryptoError("bad_padding", "empty plaintext")
    amount = data[-1]
    if not 1 <= amount <= BLOCK_SIZE or amount > len(data):
        raise WecomCryptoError("bad_padding", "pad value out of range")
    if data[-amount:] != bytes([amount]) * amount:
        raise WecomCryptoError("bad_padding", "pad bytes differ")
    return data[:-amount]


class WecomCipher:
    """AES-256-CBC with WeCom's envelope, bound to one EncodingAESKey and receiveid."""

    def __init__(self, encoding_aes_key: str, receive_id: str) -> None:
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise ValueError("EncodingAESKey is not valid base64") from None
        if len(key) != 32:
            raise ValueError("EncodingAESKey must decode to 32 bytes (43 characters)")
        self._key = key
        self._iv = key[:16]
        self._receive_id = receive_id.encode("utf-8")

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._iv))

    def encrypt(self, plain: str, *, random16: bytes | None = None) -> str:
        """Encrypt plain into WeCom's base64 envelope (for the fake server and tests)."""
        if random16 is None:
            random16 = os.urandom(_RANDOM_LEN)
        if len(random16) != _RANDOM_LEN:
            raise ValueError("random16 must be 16 bytes")
        msg = plain.encode("utf-8")
        body = random16 + struct.pack(">I", len(msg)) + msg + self._receive_id
        encryptor = self._cipher().encryptor()
        sealed = encryptor.update(_pad(body)) + encryptor.finalize()
        return base64.b64encode(sealed).decode("ascii")

    def decrypt(self, encrypted_b64: str) -> str:
        """Decrypt a WeCom envelope and check its receiveid; any failure is WecomCryptoError."""
        try:
            sealed = base64.b64decode(encrypted_b64, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise WecomCryptoError("bad_ciphertext", "not base64") from None
        if not sealed or len(sealed) % _AES_BLOCK:
            raise WecomCryptoError("bad_ciphertext", "length is not a whole number of blocks")
        decryptor = self._cipher().decryptor()
        body = _unpad(decryptor.update(sealed) + decryptor.finalize())
        if len(body) < _HEADER_LEN:
            raise WecomCryptoError("bad_ciphertext", "shorter than its header")
        (msg_len,) = struct.unpack(">I", body[_RANDOM_LEN:_HEADER_LEN])
        if msg_len > len(body) - _HEADER_LEN:
            raise WecomCryptoError("bad_ciphertext", "length field exceeds the plaintext")
        msg = body[_HEADER_LEN : _HEADER_LEN + msg_len]
        if not hmac.compare_digest(body[_HEADER_LEN + msg_len :], self._receive_id):
            raise WecomCryptoError("bad_receiveid")
        try:
            return msg.decode("utf-8")
        except UnicodeDecodeError:
            raise WecomCryptoError("bad_ciphertext", "message is not UTF-8") from None


def parse_xml(body: bytes, *, max_bytes: int = MAX_XML_BYTES) -> dict[str, str]:
    """Parse a flat WeCom <xml> document into child tag -> text, refusing DTDs and entities."""
    if len(body) > max_bytes:
        raise WecomCryptoError("bad_xml", f"body over {max_bytes} bytes")
    try:
        root = DefusedET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (ParseError, ValueError, LookupError) as exc:  # ValueError: DefusedXmlException
        raise WecomCryptoError("bad_xml", type(exc).__name__) from None
    if root.tag != "xml":
        raise WecomCryptoError("bad_xml", "root element is not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if child.tag in fields:
            raise WecomCryptoError("bad_xml", f"duplicate element {child.tag}")
        # An element with children of its own (a few events nest lists) maps to "".
        fields[child.tag] = "" if len(child) else (child.text or "")
    return fields


def _cdata(text: str) -> str:
    # "]]>" would end the section: close it after "]]" and reopen before ">".
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def build_xml(fields: Mapping[str, str | int]) -> bytes:
    """Build a flat WeCom <xml> document: CDATA for strings, bare digits for ints."""
    parts = ["<xml>"]
    for tag, value in fields.items():
        if not _TAG.match(tag):
            raise ValueError(f"not a plain XML tag name: {tag!r}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"{tag}: expected str or int, got {type(value).__name__}")
        if isinstance(value, int):
            inner = str(value)
        else:
            if _NOT_XML_CHAR.search(value):
                raise ValueError(f"{tag}: contains a character XML cannot carry")
            inner = _cdata(value)
        parts.append(f"<{tag}>{inner}</{tag}>")
    parts.append("</xml>")
    return "".join(parts).encode("utf-8")
