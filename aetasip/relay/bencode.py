"""
Bencode (the BitTorrent encoding), as rtpengine's ng control protocol
speaks it: byte strings, integers, lists and dictionaries.

Why not a library from PyPI: the maintained strict one (C{bencode2})
refuses dictionaries whose keys are not sorted, and rtpengine sends its
replies unsorted (its documentation says so: "the requirement ... that
dictionary keys must be present in lexicographical order is not currently
honoured"); the lenient one (C{bencode.py}) returns a value as C{str} or
as C{bytes} depending on whether it happens to be UTF-8, silently keeps
the last of duplicate keys and is under a non-OSI licence. The codec is
forty lines; here it is strict on everything but key order.

Decoded strings are C{bytes}; dictionary keys are C{str} (UTF-8, with
undecodable bytes kept as surrogates, so nothing is lost).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of lists and dictionaries L{decode} accepts."""

_MAX_INTEGER_DIGITS = 20


class BencodeError(ValueError):
    """Bytes that are not one well-formed bencoded value, or a value that cannot be encoded."""


def encode(value: Any) -> bytes:
    """
    The bencoding of C{value}: C{bytes}, C{str} (UTF-8), C{int} (not
    C{bool}), lists or tuples, and mappings with C{str} or C{bytes} keys
    (written in sorted order, as the format requires).

    @raise BencodeError: for anything else.
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _key(key: Any) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8", "surrogateescape")
    if isinstance(key, bytes):
        return key
    raise BencodeError(f"dictionary key {key!r} is not a string")


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError("value nested too deeply")
    if isinstance(value, bytes):
        out += (b"%d:" % len(value), value)
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        out += (b"%d:" % len(raw), raw)
    elif isinstance(value, bool):
        raise BencodeError("booleans have no bencoding")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Mapping):
        items = sorted((_key(k), v) for k, v in value.items())
        if any(a[0] == b[0] for a, b in itertools.pairwise(items)):
            raise BencodeError("duplicate dictionary key")
        out.append(b"d")
        for key, item in items:
            out += (b"%d:" % len(key), key)
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode a {type(value).__name__}")


def decode(data: bytes) -> Any:
    """
    The one value bencoded in C{data}.

    @raise BencodeError: for anything but exactly one well-formed value:
        truncated data, trailing bytes, integers with leading zeros or
        C{-0}, strings longer than the data, non-string or duplicate
        dictionary keys, nesting deeper than L{MAX_DEPTH}.
    """
    if not isinstance(data, bytes):
        raise BencodeError("bencoded data must be bytes")
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"trailing bytes at offset {end}")
    return value


def _integer(data: bytes, start: int, end: int) -> int:
    digits = data[start:end]
    body = digits[1:] if digits[:1] == b"-" else digits
    if (
        not body
        or not body.isdigit()
        or len(body) > _MAX_INTEGER_DIGITS
        or (body[:1] == b"0" and (len(body) > 1 or digits[:1] == b"-"))
    ):
        raise BencodeError(f"bad integer at offset {start}")
    return int(digits)


def _string(data: bytes, i: int) -> tuple[bytes, int]:
    colon = data.find(b":", i, i + _MAX_INTEGER_DIGITS + 1)
    if colon < 0:
        raise BencodeError(f"bad string length at offset {i}")
    length = _integer(data, i, colon)
    start = colon + 1
    if length < 0 or start + length > len(data):
        raise BencodeError(f"string at offset {i} runs past the end")
    return data[start : start + length], start + length


def _decode(data: bytes, i: int, depth: int) -> tuple[Any, int]:
    if i >= len(data):
        raise BencodeError("truncated data")
    lead = data[i : i + 1]
    if lead == b"i":
        end = data.find(b"e", i + 1, i + _MAX_INTEGER_DIGITS + 3)
        if end < 0:
            raise BencodeError(f"unterminated integer at offset {i}")
        return _integer(data, i + 1, end), end + 1
    if lead.isdigit():
        return _string(data, i)
    if lead not in (b"l", b"d"):
        raise BencodeError(f"unexpected byte {lead!r} at offset {i}")
    if depth >= MAX_DEPTH:
        raise BencodeError(f"nested deeper than {MAX_DEPTH} at offset {i}")
    i += 1
    if lead == b"l":
        items: list[Any] = []
        while data[i : i + 1] != b"e":
            item, i = _decode(data, i, depth + 1)
            items.append(item)
        return items, i + 1
    result: dict[str, Any] = {}
    while data[i : i + 1] != b"e":
        if i >= len(data):
            raise BencodeError("truncated data")
        if not data[i : i + 1].isdigit():
            raise BencodeError(f"dictionary key at offset {i} is not a string")
        raw, i = _string(data, i)
        key = raw.decode("utf-8", "surrogateescape")
        if key in result:
            raise BencodeError(f"duplicate dictionary key {key!r}")
        result[key], i = _decode(data, i, depth + 1)
    return result, i + 1
