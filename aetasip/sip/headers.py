"""
Structured header values: name-addr/addr-spec (From, To, Contact, Route…),
Via, CSeq, generic parameters and comma-separated lists (RFC 3261 section 25).

Each parser tries one compiled pattern for the well-formed common case and
falls back to a step-by-step parser that handles the rare forms and words
the error.
"""

from __future__ import annotations

import re

from aetasip.sip.errors import ParseError
from aetasip.sip.uri import URI, parseHost, parseURI

TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WS = " \t"

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# The patterns below that parse every message use possessive quantifiers
# (++, *+, ?+) where what follows can never match what they would give
# back (a token never holds the LWS, "/", ":" or "=" after it): the same
# matches without the engine's backtracking bookkeeping, a fifth to a
# quarter less time (checked against the plain patterns on 900,000 random
# and mutated values).
_TOKEN_RUN = r"[A-Za-z0-9\-.!%*_+`'~]++"
# A quoted string, escapes included; lenient about control characters in it.
_QUOTED = r'"(?:[^"\\]++|\\[\s\S])*+"'
# generic-param value: token, host (IPv6 references included) or quoted string.
_PARAM_VALUE = rf"[A-Za-z0-9\-.!%*_+`'~\[\]:]++|{_QUOTED}"

_isToken = re.compile(_TOKEN).fullmatch
_isDigits = re.compile(r"[0-9]+").fullmatch
_GENERIC_PARAM = re.compile(rf"[ \t]*+;[ \t]*+({_TOKEN_RUN})(?:[ \t]*+=[ \t]*+({_PARAM_VALUE}))?+[ \t]*+").match
# Token words, LWS between them mandatory: "(?:token LWS*)*" would backtrack
# exponentially on a long token that fails to match.
_DISPLAY_WORDS = re.compile(rf"[ \t]*(?:{_TOKEN}(?:[ \t]+{_TOKEN})*)?[ \t]*").fullmatch
# name-addr: optional display name (quoted or token words), <URI>, parameters.
_NAME_ADDR = re.compile(
    rf'[ \t]*+(?:"((?:[^"\\]++|\\[\s\S])*+)"|({_TOKEN_RUN}(?:[ \t]++{_TOKEN_RUN})*+))?+[ \t]*+<([^\x00-\x20<>"]++)>(.*)',
    re.S,
).fullmatch
# addr-spec: a URI without ',', '?' or ';' (RFC 3261 20.10), then parameters.
_ADDR_SPEC = re.compile(r'[ \t]*([^\x00-\x20;,?<>"]+)[ \t]*(;.*)?', re.S).fullmatch
_VIA = re.compile(
    rf"[ \t]*+({_TOKEN_RUN})[ \t]*+/[ \t]*+({_TOKEN_RUN})[ \t]*+/[ \t]*+({_TOKEN_RUN})[ \t]++"
    r"(\[[^\]]*+\]|[A-Za-z0-9\-.]++)(?:[ \t]*+:[ \t]*+([0-9]{1,5}+))?+[ \t]*+(;.*)?",
    re.S,
).fullmatch
_CSEQ = re.compile(rf"[ \t]*([0-9]+)[ \t]+({_TOKEN})[ \t]*").fullmatch
# Control characters a quoted string can only carry as quoted-pairs.
_NEEDS_QUOTED_PAIR = re.compile(r'[\x00-\x08\x0b\x0c\x0e-\x1f\x7f"\\]')


def isToken(text: str) -> bool:
    return _isToken(text) is not None


def splitCommas(value: str) -> list[str]:
    """
    Split a header value at the commas that separate list elements, not
    those inside quoted strings or C{<>}. Elements are stripped; empty
    elements are kept (they make a list header invalid).
    """
    if "," not in value:
        return [value.strip(_WS)]
    if '"' not in value and "<" not in value:
        return [part.strip(_WS) for part in value.split(",")]
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
            parts.append(value[start:i].strip(_WS))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(_WS))
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
    return _unescapeQuoted(text[1:-1])


def _unescapeQuoted(inner: str) -> str:
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    n = len(inner)
    while i < n:
        if inner[i] == "\\" and i + 1 < n:
            i += 1
        out.append(inner[i])
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    """
    A quoted string for C{text}: quote, backslash and control characters
    become quoted-pairs; CR and LF, which no quoted string may carry, become
    spaces so a value can never break out of its header line.
    """
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return '"' + _NEEDS_QUOTED_PAIR.sub(lambda m: "\\" + m.group(), text) + '"'


def parseHeaderParams(text: str) -> dict[str, str | None]:
    """
    Parse C{;name=value;flag} header parameters (generic-param): values
    are tokens, hosts or quoted strings (kept with their quotes).
    Names are lower-cased.

    @raise ParseError: for anything else, empty parameters included.
    """
    params: dict[str, str | None] = {}
    pos = 0
    end = len(text)
    while pos < end:
        match = _GENERIC_PARAM(text, pos)
        if match is None:
            if not text[pos:].strip(_WS):
                break
            raise ParseError("Invalid header parameters")
        name, value = match.group(1, 2)
        params[name.lower()] = value
        pos = match.end()
    return params


def formatParams(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


class NameAddr:
    """
    A name-addr or addr-spec with header parameters: the value of From,
    To, Contact, Route, Record-Route, Path. Parsed ones are shared between
    messages: build a new one rather than change one.

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
            display = (self.display if _DISPLAY_WORDS(self.display) else quote(self.display)) + " "
        return f"{display}<{self.uri}>{formatParams(self.params)}"

    def __repr__(self) -> str:
        return f"<NameAddr {self}>"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


# Parsed values by their text. The same From, To, Via and Contact come back
# in every message of a call and its retransmissions; parsing each once saves
# a quarter of a call's CPU. So parsed values are shared: never change one,
# change a copy. Short values only, and a bounded count, so hostile traffic
# costs a lookup and cannot grow memory.
CACHE_SIZE = 8192
CACHED_LENGTH = 256
_nameAddrs: dict[str, NameAddr] = {}
_vias: dict[str, Via] = {}
# CSeq values ("1 INVITE", "2 INVITE", "3 BYE"…) repeat from call to call.
_cseqs: dict[str, tuple[int, str]] = {}


def parseNameAddr(value: str) -> NameAddr:
    """
    Parse one name-addr / addr-spec with parameters. The result may be
    shared with other messages: treat it as read-only.

    An addr-spec without C{<>} ends at the first ';': what follows are
    header parameters, not URI parameters (RFC 3261 20.10).

    @raise ParseError: when malformed (unbalanced quotes, a display name
        that is neither token words nor a quoted string, spaces inside
        C{<>}, an addr-spec with ',' or '?', …).
    """
    parsed = _nameAddrs.get(value)
    if parsed is not None:
        return parsed
    match = _NAME_ADDR(value)
    if match is not None:
        quoted, words, uri, rest = match.groups()
        if quoted is not None:
            display = _unescapeQuoted(quoted)
        elif words is None:
            display = ""
        else:
            display = words if "  " not in words and "\t" not in words else " ".join(words.split())
        parsed = NameAddr(parseURI(uri), display, parseHeaderParams(rest) if rest else {})
    elif "<" not in value and (match := _ADDR_SPEC(value)) is not None:
        spec, rest = match.groups()
        parsed = NameAddr(parseURI(spec), "", parseHeaderParams(rest) if rest else {})
    else:
        parsed = _parseNameAddrSlowly(value)
    if len(value) <= CACHED_LENGTH:
        if len(_nameAddrs) >= CACHE_SIZE:
            _nameAddrs.clear()
        _nameAddrs[value] = parsed
    return parsed


def _parseNameAddrSlowly(value: str) -> NameAddr:
    """What the patterns refuse: mostly errors, worded precisely."""
    text = value.strip(_WS)
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
            if not _DISPLAY_WORDS(text[i:lt]):
                raise ParseError("Display name must be quoted")
            display = " ".join(text[i:lt].split())
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
        spec = spec.rstrip(_WS)
        if not spec or any(c in _WS for c in spec):
            raise ParseError("Invalid addr-spec")
        if "," in spec or "?" in spec:
            raise ParseError("URI with ',' or '?' must be enclosed in <>")
        uri = parseURI(spec)
    return NameAddr(uri, display, parseHeaderParams(rest))


class Via:
    """
    One Via header field value.

    @ivar protocol: upper-cased C{name/version}, normally C{SIP/2.0}.
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

    def copy(self) -> Via:
        """A Via to change (parsed ones are shared)."""
        return Via(self.transport, self.host, self.port, dict(self.params), self.protocol)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sentBy()}{formatParams(self.params)}"

    def __repr__(self) -> str:
        return f"<Via {self}>"


def parseVia(value: str) -> Via:
    """
    Parse one Via value: C{SIP / 2.0 / UDP host:port;params} (LWS allowed
    around the slashes and the colon).

    The result may be shared with other messages: treat it as read-only
    (L{Via.copy} gives one to change).

    @raise ParseError: when malformed.
    """
    parsed = _vias.get(value)
    if parsed is not None:
        return parsed
    match = _VIA(value)
    if match is None:
        raise ParseError("Invalid Via")
    name, version, transport, host, port, params = match.groups()
    host = parseHost(host)[0] if host[0] == "[" else host.lower()
    portNumber = None if port is None else int(port)
    if portNumber is not None and portNumber > 65535:
        raise ParseError("Invalid port")
    protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name}/{version}".upper()
    parsed = Via(transport.upper(), host, portNumber, parseHeaderParams(params) if params else {}, protocol)
    if len(value) <= CACHED_LENGTH:
        if len(_vias) >= CACHE_SIZE:
            _vias.clear()
        _vias[value] = parsed
    return parsed


def parseCSeq(value: str) -> tuple[int, str]:
    """
    @return: (sequence number, method).
    @raise ParseError: unless C{value} is C{number LWS method} with the
        number below 2**31 (RFC 3261 8.1.1.5); leading zeros are allowed.
    """
    parsed = _cseqs.get(value)
    if parsed is not None:
        return parsed
    match = _CSEQ(value)
    if match is None:
        raise ParseError("Invalid CSeq")
    digits, method = match.groups()
    # Bounded before int(): int() of thousands of digits is slow, and
    # refused (leading zeros included).
    digits = digits.lstrip("0") or "0"
    if len(digits) > 10 or int(digits) >= 2**31:
        raise ParseError("CSeq number too large")
    parsed = int(digits), method
    if len(value) <= CACHED_LENGTH:
        if len(_cseqs) >= CACHE_SIZE:
            _cseqs.clear()
        _cseqs[value] = parsed
    return parsed


def parseDeltaSeconds(value: str, default: int) -> int:
    """
    An Expires-like delta-seconds value; values that overflow 32 bits count
    as the maximum (RFC 3261 20.19 asks for 2**32-1). C{default} for garbage.
    """
    value = value.strip(_WS)
    if not _isDigits(value):
        return default
    # Bounded before int(), which refuses (and is slow for) thousands of digits.
    value = value.lstrip("0") or "0"
    return min(int(value), 2**32 - 1) if len(value) <= 10 else 2**32 - 1
