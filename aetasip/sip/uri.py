"""
SIP, SIPS and TEL URIs (RFC 3261 section 19.1, RFC 3966, RFC 5118).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote

from aetasip.sip.errors import ParseError

# Character classes of RFC 3261 25.1, as compiled matchers: far cheaper than
# Python-level loops on the parsing hot path.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER_CHAR = rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})"
_PASSWORD_CHAR = rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})"
_PARAM_CHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})"
_HEADERS_CHAR = rf"(?:[{_UNRESERVED}\[\]/?:+$=&]|{_ESCAPED})"

_isHost = re.compile(r"[A-Za-z0-9\-.]+").fullmatch
_isScheme = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*").fullmatch
_isDigits = re.compile(r"[0-9]+").fullmatch
_hasBadURIChar = re.compile(r'[\x00-\x20<>"\x7f]').search
_USER = re.compile(f"{_USER_CHAR}+").fullmatch
_PASSWORD = re.compile(f"{_PASSWORD_CHAR}*").fullmatch
_PARAM = re.compile(f"{_PARAM_CHAR}+").fullmatch
_HEADERS = re.compile(f"{_HEADERS_CHAR}+").fullmatch
# RFC 3966 telephone-subscriber digits: global or local, visual separators.
_TEL_NUMBER = re.compile(rf"(?:[0-9A-Fa-f*#+\-.()]|{_ESCAPED})+").fullmatch

# A whole, well-formed SIP/SIPS URI in one match: the common case. Anything it
# refuses goes through the step-by-step parser, which also words the error.
# The user part may hold ';' and '?' (RFC 4475 semiuri, intmeth): the '@'
# decides, and no valid host, parameter or header contains one.
# Possessive quantifiers (++, *+): no part's characters include the delimiter
# that ends it, so backtracking could only waste time (on host:port, say).
# Each part is matched as runs of plain characters between escapes,
# (?:[chars]++|escape)++ rather than (?:[chars]|escape)++: the same texts,
# but a run is one tight loop of the engine instead of a branch per
# character (ten times cheaper on a long parameter such as the dialog token).
_USER_RUN = rf"(?:[{_UNRESERVED}&=+$,;?/]++|{_ESCAPED})"
_PASSWORD_RUN = rf"(?:[{_UNRESERVED}&=+$,]++|{_ESCAPED})"
_PARAM_RUN = rf"(?:[{_UNRESERVED}\[\]/:&+$]++|{_ESCAPED})"
_HEADERS_RUN = rf"(?:[{_UNRESERVED}\[\]/?:+$=&]++|{_ESCAPED})"
_SIP_URI = re.compile(
    rf"([Ss][Ii][Pp][Ss]?):(?:({_USER_RUN}++)(?::({_PASSWORD_RUN}*+))?@)?"
    r"(\[[^\]]*+\]|[A-Za-z0-9\-.]++)(?::([0-9]{1,5}+))?"
    rf"((?:;{_PARAM_RUN}++(?:={_PARAM_RUN}++)?)*+)(?:\?({_HEADERS_RUN}++))?"
).fullmatch

_SAFE_USER = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/")
_SAFE_PASSWORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,")
_SAFE_PARAM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()[]/:&+$")
# Visual separators of RFC 3966 5.1.1, ignored when comparing TEL numbers.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")
# Parameters that must match when either URI has them (RFC 3261 19.1.4).
_SIGNIFICANT_PARAMS = ("transport", "user", "method", "ttl", "maddr")


def _check(matcher: Callable[[str], object], text: str, what: str) -> str:
    if not matcher(text):
        raise ParseError(f"Invalid character or escape in URI {what}")
    return text


def unescape(text: str) -> str:
    """Undo %-escaping (RFC 3261 19.1.2); invalid escapes stay as they are."""
    return unquote(text, errors="surrogateescape") if "%" in text else text


def parseHost(text: str) -> tuple[str, int | None]:
    """
    Split C{host[:port]} where host is a name, IPv4 address or bracketed
    IPv6 reference.

    @return: (host lower-cased, with IPv6 in brackets; port or C{None})
    @raise ParseError: when it is neither.
    """
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError("Unterminated IPv6 reference")
        host = _ipv6Reference(text[: end + 1])
        rest = text[end + 1 :]
        if rest:
            if rest[0] != ":":
                raise ParseError("Invalid text after IPv6 reference")
            port = _port(rest[1:])
        return host, port
    host, colon, portText = text.partition(":")
    if colon:
        port = _port(portText)
    if not _isHost(host):
        raise ParseError("Invalid host")
    return host.lower(), port


def _ipv6Reference(reference: str) -> str:
    """
    Check a bracketed IPv6 reference; return it lower-cased, as written.

    RFC 3261's ABNF allowed C{::} before an embedded IPv4 address to be
    written C{:::}; RFC 5118 4.10 asks that both forms be accepted, so the
    third colon is dropped there.
    """
    inside = reference[1:-1]
    if ":::" in inside and "." in inside:
        inside = inside.replace(":::", "::", 1)
    try:
        ipaddress.IPv6Address(inside.split("%", 1)[0])
    except ValueError:
        raise ParseError("Invalid IPv6 reference") from None
    return f"[{inside.lower()}]"


def _port(text: str) -> int:
    # Only ASCII digits: str.isdigit() also accepts '²', which int() refuses.
    if len(text) > 5 or not _isDigits(text) or int(text) > 65535:
        raise ParseError("Invalid port")
    return int(text)


def parseParams(text: str) -> dict[str, str | None]:
    """
    Parse URI parameters C{name[=value];…} (without the leading ';').
    Names are unescaped and lower-cased; values keep their case and escapes.
    """
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise ParseError("Empty URI parameter")
        _check(_PARAM, name, "parameter")
        if eq:
            if not value:
                raise ParseError("Empty URI parameter value")
            _check(_PARAM, value, "parameter")
            params[unescape(name).lower()] = value
        else:
            params[unescape(name).lower()] = None
    return params


def _splitParams(text: str) -> dict[str, str | None]:
    """L{parseParams} for text the URI pattern has already validated."""
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        params[unescape(name).lower()] = value if eq else None
    return params


class URI:
    """
    A parsed SIP/SIPS/TEL URI, or any other absolute URI kept as text.

    @ivar scheme: lower-cased scheme.
    @ivar user: the unescaped user part (the number for TEL URIs), or C{None}.
    @ivar password: the unescaped password, or C{None}.
    @ivar host: lower-cased host (IPv6 in brackets), C{""} for TEL and others.
    @ivar port: port number or C{None}.
    @ivar params: URI parameters, lower-cased names to raw values or C{None}.
    @ivar headers: the raw header part after '?', or C{""}.
    @ivar opaque: for schemes other than sip/sips/tel, the text after the colon.
    """

    __slots__ = ("headers", "host", "opaque", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str = "",
        password: str | None = None,
        opaque: str = "",
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else {}
        self.headers = headers
        self.opaque = opaque

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips", "tel"):
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(_escape(self.user or "", "user"))
        else:
            if self.user is not None:
                parts.append(_escape(self.user, "user"))
                if self.password is not None:
                    parts += [":", _escape(self.password, "password")]
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts += [":", str(self.port)]
        for name, value in self.params.items():
            name = _escape(name, "param")
            parts += [";", name] if value is None else [";", name, "=", value]
        if self.headers:
            parts += ["?", self.headers]
        return "".join(parts)

    def __repr__(self) -> str:
        return f"<URI {self}>"

    def __eq__(self, other: object) -> bool:
        """
        URI equivalence after RFC 3261 19.1.4: scheme, user and password
        exactly (after unescaping), host case-insensitively (IPv6 by
        address), port; the transport/user/method/ttl/maddr parameters must
        match when either side has them, other parameters when both have
        them; headers must match. TEL numbers compare without visual
        separators (RFC 3966 4).
        """
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.scheme == "tel":
            return _telNumber(self.user) == _telNumber(other.user) and _paramsEqual(
                self.params, other.params, self.params.keys() | other.params.keys()
            )
        if self.scheme not in ("sip", "sips"):
            return self.opaque == other.opaque
        if (self.user, self.password, self.port) != (other.user, other.password, other.port):
            return False
        if self.host != other.host and _hostKey(self.host) != _hostKey(other.host):
            return False
        names = (self.params.keys() & other.params.keys()).union(
            name for name in _SIGNIFICANT_PARAMS if name in self.params or name in other.params
        )
        if not _paramsEqual(self.params, other.params, names):
            return False
        return _headerSet(self.headers) == _headerSet(other.headers)

    def __hash__(self) -> int:
        # From the same normalised parts equality compares, so equal URIs hash alike.
        if self.scheme == "tel":
            return hash(("tel", _telNumber(self.user)))
        return hash((self.scheme, self.user, _hostKey(self.host), self.port))

    def copy(self) -> URI:
        return URI(
            self.scheme, self.user, self.host, self.port, dict(self.params), self.headers, self.password, self.opaque
        )


def _telNumber(number: str | None) -> str:
    return (number or "").translate(_VISUAL_SEPARATORS).lower()


def _hostKey(host: str) -> str:
    """A host in the form that compares: IPv6 references by address."""
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1].split('%', 1)[0]).compressed}]"
        except ValueError:
            return host
    return host


def _paramsEqual(a: dict[str, str | None], b: dict[str, str | None], names: Iterable[str]) -> bool:
    for name in names:
        x, y = a.get(name), b.get(name)
        if (name in a) != (name in b) or unescape(x or "").lower() != unescape(y or "").lower():
            return False
    return True


def _headerSet(headers: str) -> frozenset[tuple[str, str]]:
    if not headers:
        return frozenset()
    pairs = (item.partition("=") for item in headers.split("&"))
    return frozenset((unescape(name).lower(), unescape(value)) for name, _, value in pairs)


def _safeText(safe: frozenset[str]) -> Callable[[str], object]:
    """A matcher of texts made only of C{safe} characters."""
    return re.compile("[" + re.escape("".join(sorted(safe))) + "]*").fullmatch


_SAFE = {"user": _SAFE_USER, "password": _SAFE_PASSWORD, "param": _SAFE_PARAM}
# One C-level match decides that nothing needs escaping (the usual case).
_SAFE_TEXT = {part: _safeText(safe) for part, safe in _SAFE.items()}


def _escape(text: str, part: str) -> str:
    """C{text} with the characters not safe in URI part C{part} %-escaped."""
    if _SAFE_TEXT[part](text):
        return text
    safe = _SAFE[part]
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")) for c in text)


# Parsed URIs by their text: the Request-URIs of a call's requests and
# their retransmissions come back again and again. Shared like the parsed
# values of aetasip.sip.headers (never change one: URI.copy() gives one to
# change); short texts only, a bounded count.
CACHE_SIZE = 8192
CACHED_LENGTH = 256
_uris: dict[str, URI] = {}


def parseURI(text: str) -> URI:
    """
    Parse an absolute URI as it stands in a Request-Line or inside C{<>}.
    The result may be shared with other messages: treat it as read-only.

    @raise ParseError: when C{text} is not a valid URI.
    """
    parsed = _uris.get(text)
    if parsed is None:
        parsed = _parseURI(text)
        if len(text) <= CACHED_LENGTH:
            if len(_uris) >= CACHE_SIZE:
                _uris.clear()
            _uris[text] = parsed
    return parsed


def _parseURI(text: str) -> URI:
    match = _SIP_URI(text)
    if match is None:
        return _parseURISlowly(text)
    scheme, user, password, host, port, params, headers = match.groups()
    if user is not None and "%" in user:
        user = unescape(user)
    if password is not None and "%" in password:
        password = unescape(password)
    portNumber = None if port is None else int(port)
    if portNumber is not None and portNumber > 65535:
        raise ParseError("Invalid port")
    return URI(
        scheme.lower(),
        user,
        _ipv6Reference(host) if host[0] == "[" else host.lower(),
        portNumber,
        _splitParams(params[1:]) if params else {},
        headers or "",
        password,
    )


def _parseURISlowly(text: str) -> URI:
    """Every URI the pattern refuses: TEL, other schemes, and errors."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _isScheme(scheme):
        raise ParseError("Invalid URI scheme")
    scheme = scheme.lower()
    if not rest or _hasBadURIChar(rest):
        raise ParseError("Invalid characters in URI")
    if scheme == "tel":
        number, semicolon, paramText = rest.partition(";")
        if not number:
            raise ParseError("Empty TEL number")
        _check(_TEL_NUMBER, number, "number")
        return URI("tel", user=unescape(number), params=parseParams(paramText) if semicolon else {})
    if scheme not in ("sip", "sips"):
        return URI(scheme, opaque=rest)
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        userText, colon, passwordText = userinfo.partition(":")
        if not userText:
            raise ParseError("Empty URI user")
        user = unescape(_check(_USER, userText, "user"))
        if colon:
            password = unescape(_check(_PASSWORD, passwordText, "password"))
    rest, question, headers = rest.partition("?")
    if question:
        _check(_HEADERS, headers, "headers")
    hostport, semicolon, paramText = rest.partition(";")
    host, port = parseHost(hostport)
    return URI(scheme, user, host, port, parseParams(paramText) if semicolon else {}, headers, password)
