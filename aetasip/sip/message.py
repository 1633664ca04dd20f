"""
SIP messages: parse bytes into L{Request} / L{Response}, build and
serialise them (RFC 3261 sections 7, 20 and 25).

L{parse} splits the start line and the header fields (unfolded, compact
names expanded) and parses and checks every field whose structure the
core or an application relies on: Via, From, To, Call-ID, CSeq,
Max-Forwards, Content-Length and the name-addr lists (Contact, Route,
Record-Route, Path). So once a message is parsed, none of its accessors
raises; the parsed values are kept and reused by the accessors (a change
of the headers drops them). Other headers stay text.

A peer's malformed request raises L{BadRequest}, which carries the partly
parsed request whenever it can be answered; anything else raises
L{ParseError} and is dropped. No other exception escapes L{parse}.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable

from aetasip.sip.errors import ParseError
from aetasip.sip.headers import (
    NameAddr,
    Via,
    isToken,
    parseCSeq,
    parseHeaderParams,
    parseNameAddr,
    parseVia,
    splitCommas,
)
from aetasip.sip.uri import URI, parseURI

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
_CANONICAL = {
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

# Headers defined as a single value: several occurrences are an error (RFC 4475 3.3.8 multi01).
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type")

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

_MAX_FORWARDS_LIMIT = 255

# What one message may carry, so that its cost stays bounded: header fields,
# and elements of each list header the core parses (Via, Contact, Route,
# Record-Route, Path). Beyond them a request is refused with a 400 before
# any element is parsed. 70 is the usual Max-Forwards: no honest request
# crossed more hops than that.
MAX_HEADER_FIELDS = 256
MAX_LIST_ELEMENTS = 70

# Fields every message needs, each exactly once but for Via (RFC 3261 8.1.1).
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_REQUIRED_NAMES = frozenset(_REQUIRED)
# Name-addr lists parse() checks when present, besides Contact: only checked,
# not kept, as they are seldom read and cheap to parse again.
_ROUTE_LISTS = ("route", "record-route", "path")

# Field names as most peers spell them, compact forms included, mapped to the
# names headers are stored under: one dict lookup on the hot path instead of
# lower() and the compact-form expansion.
_FIELD_NAMES = {name: key for key, name in _CANONICAL.items()}
_FIELD_NAMES.update((key, key) for key in _CANONICAL)
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


_WS = " \t"
_isDigits = re.compile(r"[0-9]+").fullmatch
_isVersion = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I).fullmatch


def canonicalName(name: str) -> str:
    return _CANONICAL.get(name) or "-".join(part.capitalize() for part in name.split("-"))


def fieldName(name: str) -> str:
    """The name a header is stored under: lower case, compact forms expanded."""
    name = _FIELD_NAMES.get(name) or name.lower()
    return COMPACT_NAMES.get(name, name) if len(name) == 1 else name


# Names as peers spell them to names as stored, and stored names to names
# on the wire.
_STORED_NAMES = _Memo(_FIELD_NAMES, fieldName)
_WIRE_NAMES = _Memo(_CANONICAL, canonicalName)


class Message:
    """
    What requests and responses share: ordered header fields and a body.

    @ivar headers: C{[lowercase-name, value]} pairs in wire order, compact
        names expanded, values unfolded and stripped. A pair is replaced,
        never changed in place: copies share them.
    @ivar body: the message body.
    """

    __slots__ = ("_contacts", "_cseq", "_from", "_index", "_to", "_vias", "body", "headers", "version")

    def __init__(self, headers: list[list[str]] | None = None, body: bytes = b"", version: str = "SIP/2.0") -> None:
        self.headers = headers if headers is not None else []
        self.body = body
        self.version = version
        # What _changed() sets, without its call (every message, parsed or made).
        self._index: dict[str, list[str]] | None = None
        self._vias: list[Via] | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._cseq: tuple[int, str] | None = None
        self._contacts: list[NameAddr] | None = None

    def _changed(self, name: str | None = None) -> None:
        # Parsed structured values, dropped when their header changes (all
        # of them, and the index, when C{name} is not given). The changing
        # methods keep the index true themselves, each in a step: a proxy
        # changes a few fields of every message it forwards, and rebuilding
        # the index after each change cost more than the change.
        if name is None:
            self._index = None
            self._vias = None
            self._from = None
            self._to = None
            self._cseq = None
            self._contacts = None
        elif name == "via":
            self._vias = None
        elif name == "contact":
            self._contacts = None
        elif name == "from":
            self._from = None
        elif name == "to":
            self._to = None
        elif name == "cseq":
            self._cseq = None

    # -- access ------------------------------------------------------------

    def _lookup(self) -> dict[str, list[str]]:
        # The hot accessors read self._index first and call this only when
        # it is None (or empty).
        index = self._index
        if index is None:
            index = {}
            for name, value in self.headers:
                if name in index:
                    index[name].append(value)
                else:
                    index[name] = [value]
            self._index = index
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header C{name} (lower case), or C{default}."""
        values = (self._index or self._lookup()).get(name)
        return values[0] if values else default

    def getAll(self, name: str) -> list[str]:
        """
        Every value of header C{name}, in order; list headers (Via,
        Contact, Route…) are split at their commas.
        """
        values = (self._index or self._lookup()).get(name, [])
        if name in LIST_HEADERS:
            return [element for value in values for element in splitCommas(value) if element]
        return list(values)

    def _copyInto(self, copy: Message) -> None:
        # The parsed values are shared, never changed in place (see
        # aetasip.sip.headers); the index and header lists are the copy's own.
        index = self._index
        if index is not None:
            copy._index = {name: list(values) for name, values in index.items()}
        copy._vias = self._vias
        copy._from = self._from
        copy._to = self._to
        copy._cseq = self._cseq
        copy._contacts = self._contacts

    def has(self, name: str) -> bool:
        return name in (self._index or self._lookup())

    # -- change ------------------------------------------------------------

    def add(self, name: str, value: str) -> None:
        name = _STORED_NAMES[name]
        self.headers.append([name, value])
        index = self._index
        if index is not None:
            values = index.get(name)
            if values is None:
                index[name] = [value]
            else:
                values.append(value)
        self._changed(name)

    def addFirst(self, name: str, value: str) -> None:
        name = _STORED_NAMES[name]
        self.headers.insert(0, [name, value])
        index = self._index
        if index is not None:
            index[name] = [value, *index.get(name, ())]
        self._changed(name)

    def set(self, name: str, value: str) -> None:
        """Replace every C{name} field with one, where the first stood."""
        name = _STORED_NAMES[name]
        headers = self.headers
        index = self._index
        for i, (existing, _) in enumerate(headers):
            if existing == name:
                headers[i] = [name, value]
                # The index says when there was only this one (Max-Forwards, Contact…).
                if index is None or len(index.get(name, ())) != 1:
                    headers[i + 1 :] = [h for h in headers[i + 1 :] if h[0] != name]
                break
        else:
            headers.append([name, value])
        if index is not None:
            index[name] = [value]
        self._changed(name)

    def remove(self, name: str) -> None:
        name = _STORED_NAMES[name]
        self.headers = [h for h in self.headers if h[0] != name]
        if self._index is not None:
            self._index.pop(name, None)
        self._changed(name)

    def removeField(self, name: str, value: str) -> None:
        """Remove the C{name} fields whose whole value is C{value}."""
        name = _STORED_NAMES[name]
        self.headers = [h for h in self.headers if h[0] != name or h[1] != value]
        index = self._index
        if index is not None and name in index:
            values = [v for v in index[name] if v != value]
            if values:
                index[name] = values
            else:
                del index[name]
        self._changed(name)

    def removeFirstValues(self, name: str, count: int) -> None:
        """
        Remove the first C{count} elements of list header C{name}, each field
        split once (loose routing pops our Route entries this way).
        """
        name = _STORED_NAMES[name]
        headers = self.headers
        index = self._index
        # The index's list of the field's values, kept true in step: the
        # fields removed or cut are always its first ones.
        values = index.get(name) if index is not None else None
        # First fields of one element each (a Route of ours): the index
        # knows them; list.remove finds the first equal field in C.
        while values and count > 0 and "," not in values[0]:
            headers.remove([name, values[0]])
            del values[0]
            count -= 1
        i = 0
        while count > 0 and i < len(headers):
            field = headers[i]
            if field[0] != name:
                i += 1
                continue
            parts = splitCommas(field[1])
            if len(parts) > count:
                rest = ", ".join(parts[count:])
                headers[i] = [name, rest]
                if values:
                    values[0] = rest
                count = 0
            else:
                del headers[i]
                if values:
                    del values[0]
                count -= len(parts)
        if index is not None and values is not None and not values:
            del index[name]
        self._changed(name)

    def removeFirstValue(self, name: str) -> str | None:
        """Remove the first element of list header C{name}; return it."""
        name = _STORED_NAMES[name]
        for i, (existing, value) in enumerate(self.headers):
            if existing == name:
                parts = splitCommas(value)
                index = self._index
                if len(parts) > 1:
                    rest = ", ".join(parts[1:])
                    self.headers[i] = [name, rest]
                    if index is not None:
                        index[name] = [rest, *index[name][1:]]
                else:
                    del self.headers[i]
                    if index is not None:
                        if len(index[name]) > 1:
                            index[name] = index[name][1:]
                        else:
                            del index[name]
                self._changed(name)
                return parts[0]
        return None

    # -- structured accessors ----------------------------------------------

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first."""
        vias = self._vias
        if vias is None:
            vias = self._vias = self._parseVias()
        return list(vias)

    @property
    def topVia(self) -> Via:
        vias = self._vias
        if vias is None:
            vias = self._vias = self._parseVias()
        return vias[0]

    def _parseVias(self) -> list[Via]:
        values = (self._index or self._lookup()).get("via")
        if not values:
            raise ParseError("Missing Via")
        if len(values) == 1 and "," not in values[0]:
            return [parseVia(values[0])]
        # Empty elements (RFC 4475 badinv01) reach parseVia, which refuses them.
        return [parseVia(element) for value in values for element in splitCommas(value)]

    @property
    def fromAddr(self) -> NameAddr:
        addr = self._from
        if addr is None:
            addr = self._from = parseNameAddr(self._required("from"))
        return addr

    @property
    def toAddr(self) -> NameAddr:
        addr = self._to
        if addr is None:
            addr = self._to = parseNameAddr(self._required("to"))
        return addr

    @property
    def callID(self) -> str:
        return self._required("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        cseq = self._cseq
        if cseq is None:
            cseq = self._cseq = parseCSeq(self._required("cseq"))
        return cseq

    @property
    def contacts(self) -> list[NameAddr]:
        """
        Every Contact value but the wildcard C{*} of a REGISTER that removes
        all bindings: see L{wildcardContact}.
        """
        contacts = self._contacts
        if contacts is None:
            contacts = self._contacts = self.addresses("contact")
        return list(contacts)

    @property
    def wildcardContact(self) -> bool:
        """Is there a C{Contact: *} (RFC 3261 10.2.2)?"""
        return "*" in self.getAll("contact")

    @property
    def routes(self) -> list[NameAddr]:
        return self.addresses("route")

    @property
    def recordRoutes(self) -> list[NameAddr]:
        return self.addresses("record-route")

    def addresses(self, name: str) -> list[NameAddr]:
        """
        The values of name-addr list header C{name} (Contact, Route,
        Record-Route, Path…); a Contact C{*} is left out.

        @raise ParseError: for a malformed value, an empty one included;
            never for Contact, Route, Record-Route and Path of a message
            L{parse} returned.
        """
        result = []
        for value in (self._index or self._lookup()).get(name, ()):
            for element in splitCommas(value) if "," in value else (value.strip(_WS),):
                if element == "*" and name == "contact":
                    continue
                if not element:
                    raise ParseError(f"Empty {canonicalName(name)} value")
                result.append(parseNameAddr(element))
        return result

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise ParseError(f"Missing {canonicalName(name)}")
        return value

    # -- serialise ---------------------------------------------------------

    @abc.abstractmethod
    def startLine(self) -> str:
        """The Request-Line or Status-Line."""

    def toBytes(self) -> bytes:
        """
        The message on the wire; Content-Length always states the body.
        """
        names = _WIRE_NAMES
        lines = [f"{names[name]}: {value}" for name, value in self.headers if name != "content-length"]
        lines.insert(0, self.startLine())
        body = self.body
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    __bytes__ = toBytes


class Request(Message):
    """
    A SIP request.

    @ivar method: the method, case-sensitive as RFC 3261 says.
    @ivar uri: the Request-URI text; L{requestURI} parses it.
    """

    __slots__ = ("_uri", "method", "size", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri
        self._uri: tuple[str, URI] | None = None
        # The datagram's size when it came over UDP from a sender not yet
        # authenticated, else 0: what bounds the answers to a spoofed
        # source (see AMPLIFICATION).
        self.size = 0

    @property
    def requestURI(self) -> URI:
        # Kept with the text it was parsed from, so a changed uri is parsed anew.
        cached = self._uri
        if cached is None or cached[0] != self.uri:
            cached = self._uri = (self.uri, parseURI(self.uri))
        return cached[1]

    def copy(self) -> Request:
        """A copy to change: its own list of header fields, the same fields and parsed values."""
        copy = Request(self.method, self.uri, list(self.headers), self.body, self.version)
        self._copyInto(copy)
        copy._uri = self._uri
        return copy

    def startLine(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """
    A SIP response.

    @ivar budget: the most bytes this response may take on the wire, or
        C{None}: see L{withinBudget}.
    """

    __slots__ = ("budget", "code", "reason")

    def __init__(
        self,
        code: int,
        reason: str = "",
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.code = code
        self.reason = reason or REASONS.get(code, "")
        self.budget: int | None = None

    def copy(self) -> Response:
        """A copy to change: its own list of header fields, the same fields and parsed values."""
        copy = Response(self.code, self.reason, list(self.headers), self.body, self.version)
        self._copyInto(copy)
        return copy

    def startLine(self) -> str:
        return f"{self.version} {self.code} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.reason}>"


class BadRequest(ParseError):
    """
    A request that parsed far enough to be answered, but is invalid.

    @ivar request: the partly parsed L{Request}: its Via fields (which say
        where the answer goes) and whichever of From, To, Call-ID and CSeq
        it has are enough for L{makeResponse}; or C{None} when it cannot be
        answered and must be dropped. Its structured accessors may raise
        L{ParseError}: the error may be in the very field they parse (a
        broken top Via, RFC 4475 badinv01, leaves only the packet's source
        address to answer to).
    """

    def __init__(self, reason: str, status: int, request: Request | None) -> None:
        super().__init__(reason, status)
        self.request = request


# One header line, name and value: the whole section in one findall when it
# has no folded lines, the usual case. The value ends on a non-LWS character:
# greedy, three times faster than a lazy (.*?) before the trailing LWS. Its
# "." (anything but LF) is a plain loop in the regex engine, several times
# cheaper per character than a class such as [^\r\n]; a CR inside a value
# is kept as _splitFolded keeps it.
_HEADER_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*((?:.*[^ \t\r\n])?)[ \t]*\r?$", re.M)
# The empty line that ends the header section, whatever the line ends.
_BLANK_LINE = re.compile(rb"\n\r?\n")


def parse(data: bytes, stream: bool = False) -> Request | Response:
    """
    Parse one SIP message.

    @param data: the message bytes (a UDP datagram, or a frame of a stream).
    @param stream: C{True} when C{data} was framed by Content-Length (TCP/TLS).
    @raise BadRequest: for an invalid request; its C{request} says whether
        it can be answered.
    @raise ParseError: for anything else that is not a valid message
        (responses, garbage): drop it.
    """
    raw, body = _splitMessage(data)
    try:
        head = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Kept byte for byte: toBytes() writes the same bytes back.
        head = raw.decode("utf-8", "surrogateescape")
    start, headers, error = _splitHeaders(head)
    if start.startswith("SIP/"):
        return _parseResponse(start, headers, body, error)
    if error is None and raw.translate(_MARK_CONTROLS) != raw and _CONTROL(head) is not None:
        # RFC 3261 25.1: no header value (TEXT-UTF8, quoted-string, word...)
        # holds a control character but HTAB.
        error = "Control character in a header"
    return _parseRequest(start, headers, body, error, 0 if stream else len(data))


def _splitMessage(data: bytes) -> tuple[bytes, bytes]:
    """The header section and the bytes after the empty line."""
    if data[:1] in (b"\r", b"\n"):
        # CRLFs before the start line are keep-alives (RFC 3261 7.5).
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0 and data.find(b"\n\n", 0, end) < 0 and data.find(b"\n\r\n", 0, end + 2) < 0:
        head = data[:end]
        body = data[end + 4 :]
    else:
        # Bare LF line ends, mixed ones, or no empty line at all (tolerated
        # on UDP for a message without body).
        match = _BLANK_LINE.search(data)
        if match is None:
            head, body = data, b""
        else:
            head, body = data[: match.start()], data[match.end() :]
    return head, body


def _splitHeaders(text: str) -> tuple[str, list[list[str]], str | None]:
    """
    Split the header section into the start line and unfolded header
    fields with stored (lower-case, expanded) names.

    @return: start line, fields, and the first malformed line's error (the
        malformed lines left out), so a request can still be answered.
    """
    start, _, block = text.partition("\n")
    start = start.rstrip("\r")
    block = block.rstrip("\r\n")
    if not block:
        return start, [], None
    if "\n " not in block and "\n\t" not in block:
        fields = _HEADER_LINE.findall(block)
        if len(fields) == block.count("\n") + 1:
            names = _STORED_NAMES
            return start, [[names[name], value] for name, value in fields], None
    headers, error = _splitFolded(block)
    return start, headers, error


def _splitFolded(block: str) -> tuple[list[list[str]], str | None]:
    """The general case: folded lines, and precise errors."""
    # Each field as its name and its line pieces, joined once at the end: no
    # quadratic concatenation for a value folded over thousands of lines.
    fields: list[tuple[str, list[str]]] = []
    error = None
    for line in block.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        if line[0] in _WS:
            if fields:
                # Folding: the line break and leading LWS become one space.
                fields[-1][1].append(line.strip(_WS))
            elif error is None:
                error = "Continuation line without a header"
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(_WS)
        if not colon or not isToken(name):
            error = error or ("Header line without a colon" if not colon else "Invalid header name")
            # Left out, with whatever folds onto it.
            fields.append(("", []))
            continue
        fields.append((fieldName(name), [value.strip(_WS)]))
    headers = [[name, " ".join(piece for piece in pieces if piece)] for name, pieces in fields if name]
    return headers, error


def _checkLength(message: Message, body: bytes) -> bytes:
    """The body as Content-Length delimits it (RFC 3261 18.3)."""
    lengths = (message._index or message._lookup()).get("content-length")
    if not lengths:
        return body
    if len(lengths) > 1:
        raise ParseError("Multiple Content-Length headers")
    text = lengths[0]
    if not _isDigits(text):
        raise ParseError("Invalid Content-Length")
    # Bounded before int(), which refuses thousands of digits.
    if len(text) > 10 and len(text.lstrip("0")) > 10:
        raise ParseError("Content-Length larger than the body")
    length = int(text.lstrip("0") or "0")
    size = len(body)
    if length > size:
        raise ParseError("Content-Length larger than the body")
    return body[:length] if length < size else body


def _parseResponse(start: str, headers: list[list[str]], body: bytes, error: str | None) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if error is not None:
        raise ParseError(error)
    if len(headers) > MAX_HEADER_FIELDS:
        raise ParseError("Too many header fields")
    if version.upper() != "SIP/2.0":
        raise ParseError("Invalid status line")
    if len(code) != 3 or not _isDigits(code) or not "100" <= code <= "699":
        raise ParseError("Invalid status code")
    response = Response(int(code), reason, headers)
    # Kept as sent, even empty (RFC 4475 noreason).
    response.reason = reason
    _checkFields(response)
    response.body = _checkLength(response, body)
    return response


def _parseRequest(start: str, headers: list[list[str]], body: bytes, error: str | None, size: int) -> Request:
    parts = start.split(" ")
    method = parts[0]
    request = Request(method, parts[1] if len(parts) > 1 else "", headers)
    request.size = size
    if not isToken(method) or "via" not in request._lookup():
        # No method or no Via: nothing to answer, nowhere to send it (RFC 3261 18.2.2).
        raise ParseError(error or "Not a SIP request")
    try:
        if error is not None:
            raise ParseError(error)
        if len(headers) > MAX_HEADER_FIELDS:
            raise ParseError("Too many header fields")
        if len(parts) != 3 or not parts[1]:
            # Extra or missing SP: RFC 4475 lwsruri, lwsstart, trws.
            raise ParseError("Invalid Request-Line")
        _checkVersion(parts[2])
        uri = parseURI(parts[1])
        if uri.headers:
            # RFC 3261 19.1.1 forbids headers in a Request-URI (RFC 4475 escruri).
            raise ParseError("Headers in the Request-URI")
        request._uri = (request.uri, uri)
        _checkFields(request)
        if request.cseq[1] != method:
            raise ParseError("CSeq method does not match the Request-Line")
        maxForwards = request.get("max-forwards")
        if maxForwards is not None and (
            not _isDigits(maxForwards)
            or len(maxForwards.lstrip("0")) > 3
            or int(maxForwards.lstrip("0") or "0") > _MAX_FORWARDS_LIMIT
        ):
            raise ParseError("Invalid Max-Forwards")
        _checkRequestFields(request)
        request.body = _checkLength(request, body)
    except ParseError as e:
        raise BadRequest(e.reason, e.status, request) from None
    return request


# RFC 3261 section 25 pieces for the checks below.
# RFC 3261's word leaves out "=", ";", ",", "&", "$", "#", "^" and "|", but
# agents send them (base64 Call-IDs end in "="): any visible ASCII but "@"
# is taken, one "@" at most; spaces, controls and non-ASCII are not.
_CALL_ID_WORD = r"[\x21-\x3f\x41-\x7e]+"
_isCallID = re.compile(rf"{_CALL_ID_WORD}(?:@{_CALL_ID_WORD})?").fullmatch
# Not escaped as a quoted-pair (RFC 4475 intmeth has "\\<BEL>" in a display name).
_CONTROL = re.compile(r"(?<!\\)[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]").search
# The same bytes changed (to another control byte) by a translation table:
# translating the header section's bytes is a plain C loop, five times
# cheaper than the search of the regular expression engine, and changes
# nothing (the same object comes back) when no control character is there.
# Only then the precise search runs. (UTF-8 encodes no other character
# with these bytes.)
_CONTROLS = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]
_MARK_CONTROLS = bytes((0x01 if byte == 0x00 else 0x00) if byte in _CONTROLS else byte for byte in range(256))
_MEDIA_TYPE = re.compile(r"[ \t]*[A-Za-z0-9\-.!%*_+`'~]+[ \t]*/[ \t]*[A-Za-z0-9\-.!%*_+`'~]+(.*)", re.S).fullmatch
_DELTA_SECONDS = re.compile(r"[ \t]*[0-9]+[ \t]*(;.*)?", re.S).fullmatch
# Option-tag lists the element judges (Require, Proxy-Require: 420) or reads.
_OPTION_TAG_LISTS = ("require", "proxy-require", "supported")
_URI_HEADERS_FORBIDDEN = ("route", "record-route")
_SESSION_TIMERS = ("session-expires", "min-se")


def _checkRequestFields(request: Request) -> None:
    """
    The grammar (RFC 3261 section 25) of the request header fields the
    service relies on besides those L{_checkFields} parses: Call-ID, the
    URIs of From and To (no headers, 19.1.1; Route and Record-Route are
    checked by L{_checkFields}), option-tag lists,
    Expires, Content-Type, Session-Expires and Min-SE (RFC 4028).
    """
    index = request._lookup()
    if not _isCallID(index["call-id"][0]):
        raise ParseError("Invalid Call-ID")
    fromAddr, toAddr = request._from, request._to
    if fromAddr is not None and fromAddr.uri.headers:
        raise ParseError("Headers in a From URI")
    if toAddr is not None and toAddr.uri.headers:
        raise ParseError("Headers in a To URI")
    for name in () if index.keys().isdisjoint(_OPTION_TAG_LISTS) else _OPTION_TAG_LISTS:
        values = index.get(name)
        if values is not None:
            for value in values:
                if not value and name == "supported":
                    # Supported may be empty (RFC 3261 20.37): no option tag.
                    continue
                for tag in splitCommas(value) if "," in value else (value.strip(_WS),):
                    if not isToken(tag):
                        raise ParseError(f"Invalid {canonicalName(name)}")
    expires = index.get("expires")
    if expires is not None and not all(_isDigits(value.strip(_WS)) for value in expires):
        raise ParseError("Invalid Expires")
    contentType = index.get("content-type")
    if contentType is not None:
        match = _MEDIA_TYPE(contentType[0])
        if match is None:
            raise ParseError("Invalid Content-Type")
        if match.group(1):
            parseHeaderParams(match.group(1))
    for name in () if index.keys().isdisjoint(_SESSION_TIMERS) else _SESSION_TIMERS:
        values = index.get(name)
        if values is not None:
            match = _DELTA_SECONDS(values[0])
            if len(values) > 1 or match is None:
                raise ParseError(f"Invalid {canonicalName(name)}")
            if match.group(1):
                parseHeaderParams(match.group(1))


def _checkVersion(version: str) -> None:
    """SIP-Version is case-insensitive; another version is a 505."""
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if _isVersion(version):
            raise ParseError("Version Not Supported", 505)
        raise ParseError("Invalid SIP version")


def _checkFields(message: Message) -> None:
    """
    Check and parse what requests and responses share, keeping the parsed
    values for the accessors.
    """
    index = message._lookup()
    repeated = len(message.headers) - len(index)
    # Names that repeat but Via (the usual case: none): look for a single one.
    if repeated and repeated != len(index.get("via", ())) - 1:
        for name in _SINGLE:
            values = index.get(name)
            if values is not None and len(values) > 1:
                # RFC 4475 multi01, mcl01.
                raise ParseError(f"Multiple {canonicalName(name)} headers")
    if not index.keys() >= _REQUIRED_NAMES:
        for name in _REQUIRED:
            if name not in index:
                # RFC 4475 insuf.
                raise ParseError(f"Missing {canonicalName(name)}")
    if not index["call-id"][0]:
        raise ParseError("Empty Call-ID")
    # Parsed straight from the index and kept for the accessors.
    message._from = parseNameAddr(index["from"][0])
    message._to = parseNameAddr(index["to"][0])
    message._cseq = parseCSeq(index["cseq"][0])
    vias = index["via"]
    if len(vias) == 1 and "," not in vias[0]:
        message._vias = [parseVia(vias[0])]
    else:
        _checkCount(vias, "via")
        message._vias = message._parseVias()
    if "contact" in index:
        _checkCount(index["contact"], "contact")
        message._contacts = message.addresses("contact")
    if index.keys().isdisjoint(_ROUTE_LISTS):
        return
    for name in _ROUTE_LISTS:
        values = index.get(name)
        if values is not None:
            _checkCount(values, name)
            addresses = message.addresses(name)
            if name in _URI_HEADERS_FORBIDDEN and isinstance(message, Request):
                if any(addr.uri.headers for addr in addresses):
                    raise ParseError(f"Headers in a {canonicalName(name)} URI")


def _checkCount(values: list[str], name: str) -> None:
    """Refuse a list header of more than L{MAX_LIST_ELEMENTS}, before parsing any."""
    count = len(values)
    if (
        count > MAX_LIST_ELEMENTS
        or count + (values[0] if count == 1 else "".join(values)).count(",") > MAX_LIST_ELEMENTS
    ):
        # Commas may sit in quoted strings: count precisely only when in doubt.
        if sum(len(splitCommas(value)) for value in values) > MAX_LIST_ELEMENTS:
            raise ParseError(f"Too many {canonicalName(name)} values")


REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def makeResponse(request: Request, code: int, reason: str = "", toTag: str | None = None) -> Response:
    """
    A response to C{request} (RFC 3261 8.2.6.2): every Via, the first
    From, To, Call-ID and CSeq copied (a request with several is invalid,
    RFC 4475 multi01, and still answered), a To tag added when C{toTag} is
    given and the request's To has none.
    """
    headers: list[list[str]] = []
    copied: set[str] = set()
    for name, value in request.headers:
        if name == "via":
            headers.append([name, value])
        elif name in _ANSWER_COPIES and name not in copied:
            copied.add(name)
            if name == "to" and toTag is not None and _lacksTag(request):
                value = f"{value};tag={toTag}"
            headers.append([name, value])
    return Response(code, reason or REASONS.get(code, ""), headers)


_ANSWER_COPIES = frozenset(("from", "to", "call-id", "cseq"))


def _lacksTag(request: Request) -> bool:
    """Does the first To have no tag? A To that does not parse is echoed as it is."""
    try:
        return request.toAddr.tag is None
    except ParseError:
        return False


def localResponse(request: Request, code: int, reason: str = "", server: str = "") -> Response:
    """
    A response this element makes itself (not relayed): L{makeResponse}
    with a To tag derived from the Call-ID and CSeq, so every answer to one
    request carries the same tag, and a Server header.
    """
    tag = format(hash((request.get("call-id"), request.get("cseq"))) & 0xFFFFFFFF, "08x")
    response = makeResponse(request, code, reason, toTag=tag)
    if server:
        response.add("server", server)
    if request.size:
        response.budget = AMPLIFICATION * request.size - 1
    return response


AMPLIFICATION = 4
"""
A response of this element to a request over UDP whose sender is not
authenticated (its source may be spoofed: the response would go to a
victim) takes less than this many times the request's bytes: a reflector
that amplifies less than 4x is of no use to an attacker.
"""

# Dropped first, in this order, when a response exceeds its budget: what
# the sender can do without (RFC 3261 20: all optional in these answers).
_EXPENDABLE = ("server", "warning", "supported", "accept", "allow")


def withinBudget(response: Response) -> bytes | None:
    """
    The bytes of C{response}, kept within its L{Response.budget}: optional
    header fields dropped, then all challenges but the first; C{None} when
    even that exceeds it (send nothing: the request was smaller than any
    honest one).
    """
    data = response.toBytes()
    budget = response.budget
    if budget is None or len(data) <= budget:
        return data
    for name in (*_EXPENDABLE, "www-authenticate", "proxy-authenticate"):
        values = response._lookup().get(name)
        if not values:
            continue
        if name in _EXPENDABLE:
            response.remove(name)
        elif len(values) > 1:
            response.set(name, values[0])
        else:
            continue
        data = response.toBytes()
        if len(data) <= budget:
            return data
    return None
