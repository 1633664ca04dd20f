"""
SIP messages (RFC 3261 sections 7, 20 and 25): L{Request} and
L{Response}, their header fields, the structured values the core reads,
and their bytes on the wire.

L{aetasip.sip.parser.parse} makes them from bytes: it parses and checks
every field whose structure the core or an application relies on (Via,
From, To, Call-ID, CSeq, Max-Forwards, Content-Length and the name-addr
lists: Contact, Route, Record-Route, Path) and keeps the parsed values
for the accessors here, so once a message is parsed none of its
accessors raises; a change of the headers drops them. Other headers stay
text. L{aetasip.sip.responses} builds the answers to a request.
"""

from __future__ import annotations

import abc

from aetasip.sip.errors import ParseError
from aetasip.sip.fieldnames import LIST_HEADERS, STORED_NAMES, WIRE_NAMES, canonicalName
from aetasip.sip.headers import NameAddr, Via, parseCSeq, parseNameAddr, parseVia, splitCommas
from aetasip.sip.uri import URI, parseURI

_WS = " \t"

# The reason phrase of each status code (RFC 3261 section 21 and extensions), for responses made here.
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
        # aetasip.sip.headers); the header list is the copy's own, and so is
        # its index, built when first read: most copies are changed and
        # written out without a lookup.
        copy._vias = self._vias
        copy._from = self._from
        copy._to = self._to
        copy._cseq = self._cseq
        copy._contacts = self._contacts

    def has(self, name: str) -> bool:
        return name in (self._index or self._lookup())

    # -- change ------------------------------------------------------------

    def add(self, name: str, value: str) -> None:
        name = STORED_NAMES[name]
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
        name = STORED_NAMES[name]
        self.headers.insert(0, [name, value])
        index = self._index
        if index is not None:
            index[name] = [value, *index.get(name, ())]
        self._changed(name)

    def set(self, name: str, value: str) -> None:
        """Replace every C{name} field with one, where the first stood."""
        name = STORED_NAMES[name]
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
        name = STORED_NAMES[name]
        self.headers = [h for h in self.headers if h[0] != name]
        if self._index is not None:
            self._index.pop(name, None)
        self._changed(name)

    def removeField(self, name: str, value: str) -> None:
        """Remove the C{name} fields whose whole value is C{value}."""
        name = STORED_NAMES[name]
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
        name = STORED_NAMES[name]
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
        name = STORED_NAMES[name]
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
        names = WIRE_NAMES
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
