"""
base64url (RFC 4648 section 5) for the nonces and dialog tokens the SIP
core makes and reads on every call, straight on C{binascii}: the same
results as C{base64.urlsafe_b64encode} and C{urlsafe_b64decode}, which are
two and four Python calls deep.
"""

from __future__ import annotations

import binascii

_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def encode(data: bytes) -> str:
    """C{data} in base64url, padded."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).decode("ascii")


def decode(text: str) -> bytes:
    """
    The bytes C{text} encodes; characters outside the alphabet are left out,
    as C{base64.urlsafe_b64decode} does.

    @raise ValueError: (C{binascii.Error} included) for text that is not
        ASCII or not correctly padded.
    """
    return binascii.a2b_base64(text.encode("ascii").translate(_FROM_URLSAFE))
