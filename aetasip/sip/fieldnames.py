"""
SIP header field names (RFC 3261 section 7.3): compact forms, the
canonical spelling written on the wire, the lower-case names headers are
stored under, and which headers hold comma-separated lists.
"""

from __future__ import annotations

from collections.abc import Callable

COMPACT_NAMES = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Header names as written on the wire; others are title-cased.
CANONICAL_NAMES = {
    name.lower(): name
    for name in [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Length",
        "Content-Type",
        "Expires",
        "Min-Expires",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Record-Route",
        "Route",
        "Path",
        "User-Agent",
        "Server",
        "Allow",
        "Accept",
        "Supported",
        "Require",
        "Unsupported",
        "Proxy-Require",
        "Retry-After",
        "Date",
        "Warning",
        "Authentication-Info",
        "RSeq",
        "RAck",
        "SIP-ETag",
        "SIP-If-Match",
        "Alert-Info",
        "Call-Info",
        "Error-Info",
        "Reply-To",
        "MIME-Version",
        "Allow-Events",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Subscription-State",
        "Event",
        "Refer-To",
        "Referred-By",
        "Session-Expires",
        "Min-SE",
        "P-Asserted-Identity",
        "Timestamp",
    ]
}

# Headers whose values are lists of comma-separated elements. Only these are split:
# others (WWW-Authenticate, Date, User-Agent, unknown ones) may legally contain commas.
LIST_HEADERS = frozenset(
    [
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "p-asserted-identity",
    ]
)

# Field names as most peers spell them, compact forms included, mapped to the
# names headers are stored under: one dict lookup on the hot path instead of
# lower() and the compact-form expansion.
_FIELD_NAMES = {name: key for key, name in CANONICAL_NAMES.items()}
_FIELD_NAMES.update((key, key) for key in CANONICAL_NAMES)
_FIELD_NAMES.update(COMPACT_NAMES)
_FIELD_NAMES.update((short.upper(), name) for short, name in COMPACT_NAMES.items())


class _Memo(dict[str, str]):
    """
    A table of names that computes a name it lacks and keeps it, within
    bounds (short names, a bounded count: a peer's made-up names cost a
    call, not memory): C{table[name]} is one lookup on the hot path.
    """

    def __init__(self, known: dict[str, str], compute: Callable[[str], str]) -> None:
        super().__init__(known)
        self.compute = compute

    def __missing__(self, name: str) -> str:
        value = self.compute(name)
        if len(name) <= 64 and len(self) < 1024:
            self[name] = value
        return value


def canonicalName(name: str) -> str:
    """The spelling on the wire of the stored name C{name}: C{call-id} -> C{Call-ID}."""
    return CANONICAL_NAMES.get(name) or "-".join(part.capitalize() for part in name.split("-"))


def fieldName(name: str) -> str:
    """The name a header is stored under: lower case, compact forms expanded."""
    name = _FIELD_NAMES.get(name) or name.lower()
    return COMPACT_NAMES.get(name, name) if len(name) == 1 else name


# Names as peers spell them to names as stored, and stored names to names
# on the wire.
STORED_NAMES = _Memo(_FIELD_NAMES, fieldName)
WIRE_NAMES = _Memo(CANONICAL_NAMES, canonicalName)
