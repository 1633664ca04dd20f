"""
SIP, SIPS and TEL URIs (RFC 3261 section 19.1, RFC 3966, RFC 5118).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import unquote

from aetasip.sip.errors import ParseError

# Character classes of RFC 3261 25.1, as compiled matchers: far cheaper than
# Python-level loops on the parsing hot path.
_isHost = re.compile(r"[A-Za-z0-9\-.]+").fullmatch
_isScheme = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*").fullmatch
_hasBadURIChar = re.compile(r'[\x00-\x20<>"\x7f]').search
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+").fullmatch
_PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*").fullmatch
_PARAM = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+").fullmatch
_HEADERS = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$=&]|{_ESCAPED})+").fullmatch
_SAFE_USER = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,/")
_SAFE_PASSWORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,")


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
        inside = text[1:end]
        try:
            address = ipaddress.IPv6Address(inside.split("%", 1)[0])
        except ValueError:
            raise ParseError("Invalid IPv6 reference") from None
        host = f"[{address.compressed}]"
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


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ParseError("Invalid port")
    return int(text)


def parseParams(text: str) -> dict[str, str | None]:
    """
    Parse URI parameters C{name[=value];…} (without the leading ';').
    Names are lower-cased; values keep their case and escapes.
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
            parts.append(_escape(self.user or "", _SAFE_USER))
        else:
            if self.user is not None:
                parts.append(_escape(self.user, _SAFE_USER))
                if self.password is not None:
                    parts += [":", _escape(self.password, _SAFE_PASSWORD)]
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts += [":", str(self.port)]
        for name, value in self.params.items():
            parts += [";", name] if value is None else [";", name, "=", value]
        if self.headers:
            parts += ["?", self.headers]
        return "".join(parts)

    def __repr__(self) -> str:
        return f"<URI {self}>"

    def __eq__(self, other: object) -> bool:
        """
        URI equality, simplified from RFC 3261 19.1.4: scheme, user,
        password, host, port, and the transport/user/method/ttl/maddr
        parameters when either side has them.
        """
        if not isinstance(other, URI):
            return NotImplemented
        if (self.scheme, self.user, self.password, self.host, self.port) != (
            other.scheme,
            other.user,
            other.password,
            other.host,
            other.port,
        ):
            return False
        if self.scheme not in ("sip", "sips", "tel"):
            return self.opaque == other.opaque
        for name in ("transport", "user", "method", "ttl", "maddr"):
            a, b = self.params.get(name), other.params.get(name)
            if (a or "").lower() != (b or "").lower():
                return False
        return True

    def __hash__(self) -> int:
        return hash((self.scheme, self.user, self.host, self.port))

    def copy(self) -> URI:
        return URI(
            self.scheme, self.user, self.host, self.port, dict(self.params), self.headers, self.password, self.opaque
        )


def _escape(text: str, safe: frozenset[str]) -> str:
    if all(c in safe for c in text):
        return text
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")) for c in text)


def parseURI(text: str) -> URI:
    """
    Parse an absolute URI as it stands in a Request-Line or inside C{<>}.

    @raise ParseError: when C{text} is not a valid URI.
    """
    scheme, colon, rest = text.partition(":")
    if not colon or not _isScheme(scheme):
        raise ParseError("Invalid URI scheme")
    scheme = scheme.lower()
    if not rest or _hasBadURIChar(rest):
        raise ParseError("Invalid characters in URI")
    if scheme == "tel":
        number, _, paramText = rest.partition(";")
        if not number:
            raise ParseError("Empty TEL number")
        return URI("tel", user=unescape(number), params=parseParams(paramText) if paramText else {})
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
    rest, _, headers = rest.partition("?")
    if headers:
        _check(_HEADERS, headers, "headers")
    hostport, _, paramText = rest.partition(";")
    host, port = parseHost(hostport)
    return URI(scheme, user, host, port, parseParams(paramText) if paramText else {}, headers, password)
