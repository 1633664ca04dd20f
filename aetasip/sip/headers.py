"""
Structured header values: name-addr/addr-spec (From, To, Contact, Route…),
Via, CSeq, generic parameters and comma-separated lists (RFC 3261 section 25).
"""

from __future__ import annotations

import re

from aetasip.sip.errors import ParseError
from aetasip.sip.uri import URI, parseHost, parseURI

TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_PARAM_VALUE_CHARS = TOKEN_CHARS | frozenset("[]:")  # token / host (IPv6 reference)
_WS = " \t"


_isToken = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+").fullmatch


def isToken(text: str) -> bool:
    return _isToken(text) is not None


def splitCommas(value: str) -> list[str]:
    """
    Split a header value at the commas that separate list elements, not
    those inside quoted strings or C{<>}.
    """
    if "," not in value:
        return [value.strip()]
    parts = []
    start = 0
    quoted = angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def _skipWS(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _quotedEnd(text: str, i: int) -> int:
    """Index just past the quoted string starting at C{text[i] == '"'}."""
    n = len(text)
    i += 1
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise ParseError("Unterminated quoted string")


def unquote(text: str) -> str:
    """The content of a quoted string, escapes resolved."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner):
            i += 1
        out.append(inner[i])
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parseHeaderParams(text: str) -> dict[str, str | None]:
    """
    Parse C{;name=value;flag} header parameters (generic-param): values
    are tokens, hosts or quoted strings (kept with their quotes).
    Names are lower-cased.
    """
    params: dict[str, str | None] = {}
    i = _skipWS(text, 0)
    n = len(text)
    while i < n:
        if text[i] != ";":
            raise ParseError("Invalid header parameters")
        i = _skipWS(text, i + 1)
        start = i
        while i < n and text[i] in TOKEN_CHARS:
            i += 1
        name = text[start:i]
        if not name:
            raise ParseError("Empty header parameter")
        i = _skipWS(text, i)
        value: str | None = None
        if i < n and text[i] == "=":
            i = _skipWS(text, i + 1)
            if i < n and text[i] == '"':
                end = _quotedEnd(text, i)
                value = text[i:end]
                i = end
            else:
                start = i
                while i < n and text[i] in _PARAM_VALUE_CHARS:
                    i += 1
                value = text[start:i]
                if not value:
                    raise ParseError("Empty header parameter value")
            i = _skipWS(text, i)
        params[name.lower()] = value
    return params


def formatParams(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


class NameAddr:
    """
    A name-addr or addr-spec with header parameters: the value of From,
    To, Contact, Route, Record-Route, Path.

    @ivar display: the display name (unquoted), or C{""}.
    @ivar uri: the L{URI}.
    @ivar params: header parameters (C{tag}, C{expires}, C{q}, C{+sip.instance}…).
    """

    __slots__ = ("display", "params", "uri")

    def __init__(self, uri: URI, display: str = "", params: dict[str, str | None] | None = None) -> None:
        self.uri = uri
        self.display = display
        self.params = params if params is not None else {}

    def __str__(self) -> str:
        display = ""
        if self.display:
            display = (self.display if isToken(self.display.replace(" ", "")) else quote(self.display)) + " "
        return f"{display}<{self.uri}>{formatParams(self.params)}"

    def __repr__(self) -> str:
        return f"<NameAddr {self}>"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parseNameAddr(value: str) -> NameAddr:
    """
    Parse one name-addr / addr-spec with parameters.

    An addr-spec without C{<>} ends at the first ';': what follows are
    header parameters, not URI parameters (RFC 3261 20.10).

    @raise ParseError: when malformed (unbalanced quotes, a display name
        that is neither token words nor a quoted string, spaces inside
        C{<>}, …).
    """
    text = value.strip()
    display = ""
    i = 0
    n = len(text)
    if n and text[0] == '"':
        end = _quotedEnd(text, 0)
        display = unquote(text[:end])
        i = _skipWS(text, end)
        if i >= n or text[i] != "<":
            raise ParseError("Quoted display name without <URI>")
    lt = text.find("<", i)
    if lt >= 0:
        if not display:
            words = text[i:lt].split()
            if not all(isToken(w) for w in words):
                raise ParseError("Display name must be quoted")
            display = " ".join(words)
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError("Missing '>'")
        inner = text[lt + 1 : gt]
        if not inner or inner[0] in _WS or inner[-1] in _WS:
            raise ParseError("Whitespace inside <URI>")
        uri = parseURI(inner)
        rest = text[gt + 1 :]
    else:
        if i:
            raise ParseError("Missing '<'")
        spec, semi, rest = text.partition(";")
        rest = semi + rest
        if not spec or any(c in _WS for c in spec):
            raise ParseError("Invalid addr-spec")
        uri = parseURI(spec)
        if uri.headers or "," in spec or "?" in spec:
            # RFC 3261 20: an addr-spec with ',', '?' or ';' must be in <>.
            raise ParseError("URI with headers must be enclosed in <>")
    return NameAddr(uri, display, parseHeaderParams(rest) if rest.strip() else {})


class Via:
    """
    One Via header field value.

    @ivar transport: upper-cased transport (C{UDP}, C{TCP}, C{TLS}, C{WS}…).
    @ivar host: sent-by host (lower-cased; IPv6 in brackets).
    @ivar port: sent-by port or C{None}.
    @ivar params: parameters (C{branch}, C{rport}, C{received}, C{maddr}…).
    """

    __slots__ = ("host", "params", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params if params is not None else {}

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def sentBy(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sentBy()}{formatParams(self.params)}"


def parseVia(value: str) -> Via:
    """
    Parse one Via value: C{SIP / 2.0 / UDP host:port;params} (LWS allowed
    around the slashes).

    @raise ParseError: when malformed.
    """
    slash1 = value.find("/")
    slash2 = value.find("/", slash1 + 1)
    if slash1 < 0 or slash2 < 0:
        raise ParseError("Invalid Via")
    name = value[:slash1].strip()
    version = value[slash1 + 1 : slash2].strip()
    rest = value[slash2 + 1 :].lstrip()
    i = 0
    while i < len(rest) and rest[i] in TOKEN_CHARS:
        i += 1
    transport = rest[:i].upper()
    if not transport or not isToken(name) or not isToken(version):
        raise ParseError("Invalid Via protocol")
    rest = rest[i:].lstrip()
    semi = rest.find(";")
    sentBy = (rest if semi < 0 else rest[:semi]).strip()
    if not sentBy:
        raise ParseError("Invalid Via sent-by")
    # LWS is allowed around the ':' of sent-by
    if " " in sentBy or "\t" in sentBy:
        sentBy = "".join(sentBy.split())
    host, port = parseHost(sentBy)
    params = parseHeaderParams(rest[semi:]) if semi >= 0 else {}
    return Via(transport, host, port, params, f"{name}/{version}".upper())


def parseCSeq(value: str) -> tuple[int, str]:
    """
    @return: (sequence number, method).
    @raise ParseError: unless C{value} is C{number LWS method} with the
        number below 2**31 (RFC 3261 8.1.1.5).
    """
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not isToken(parts[1]):
        raise ParseError("Invalid CSeq")
    number = int(parts[0])
    if number >= 2**31:
        raise ParseError("CSeq number too large")
    return number, parts[1]


def parseDeltaSeconds(value: str, default: int) -> int:
    """
    An Expires-like delta-seconds value; values that overflow 32 bits count
    as the maximum (RFC 3261 20.19 asks for 2**32-1). C{default} for garbage.
    """
    value = value.strip()
    if not value.isdigit():
        return default
    return min(int(value), 2**32 - 1) if len(value) < 12 else 2**32 - 1
