"""
SIP messages: parse bytes into L{Request} / L{Response}, build and
serialise them (RFC 3261 sections 7, 20 and 25).

Parsing is split in two so the hot path stays cheap: L{parse} splits the
start line and the header fields (unfolded, compact names expanded) and
checks the fields every element relies on (Via, From, To, Call-ID, CSeq,
Max-Forwards, Content-Length); structured values of other headers are
parsed on demand through the accessors.
"""

from __future__ import annotations

import abc
import re

from aetasip.sip.errors import ParseError
from aetasip.sip.headers import (
    NameAddr,
    Via,
    isToken,
    parseCSeq,
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

# Headers defined as a single value: several occurrences are an error (RFC 4475 3.1.2.19).
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


def canonicalName(name: str) -> str:
    return _CANONICAL.get(name) or "-".join(part.capitalize() for part in name.split("-"))


class Message:
    """
    What requests and responses share: ordered header fields and a body.

    @ivar headers: C{[lowercase-name, value]} pairs in wire order, compact
        names expanded, values unfolded and stripped.
    @ivar body: the message body.
    """

    __slots__ = ("_cache", "_index", "body", "headers", "version")

    def __init__(self, headers: list[list[str]] | None = None, body: bytes = b"", version: str = "SIP/2.0") -> None:
        self.headers = headers if headers is not None else []
        self.body = body
        self.version = version
        self._index: dict[str, list[str]] | None = None
        # Parsed structured values (From, To, top Via, CSeq), dropped on change.
        self._cache: dict[str, object] = {}

    def _changed(self) -> None:
        self._index = None
        self._cache = {}

    # -- access ------------------------------------------------------------

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self.headers:
                values = index.get(name)
                if values is None:
                    index[name] = [value]
                else:
                    values.append(value)
            self._index = index
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header C{name} (lower case), or C{default}."""
        values = self._lookup().get(name)
        return values[0] if values else default

    def getAll(self, name: str) -> list[str]:
        """
        Every value of header C{name}, in order; list headers (Via,
        Contact, Route…) are split at their commas.
        """
        values = self._lookup().get(name, [])
        if name in LIST_HEADERS:
            return [element for value in values for element in splitCommas(value) if element]
        return list(values)

    def has(self, name: str) -> bool:
        return name in self._lookup()

    # -- change ------------------------------------------------------------

    def add(self, name: str, value: str) -> None:
        self.headers.append([name.lower(), value])
        self._changed()

    def addFirst(self, name: str, value: str) -> None:
        self.headers.insert(0, [name.lower(), value])
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every C{name} field with one, where the first stood."""
        name = name.lower()
        for i, (existing, _) in enumerate(self.headers):
            if existing == name:
                self.headers[i] = [name, value]
                self.headers[i + 1 :] = [h for h in self.headers[i + 1 :] if h[0] != name]
                break
        else:
            self.headers.append([name, value])
        self._changed()

    def remove(self, name: str) -> None:
        self.headers = [h for h in self.headers if h[0] != name]
        self._changed()

    def removeFirstValue(self, name: str) -> str | None:
        """Remove the first element of list header C{name}; return it."""
        for i, (existing, value) in enumerate(self.headers):
            if existing == name:
                parts = splitCommas(value)
                if len(parts) > 1:
                    self.headers[i] = [name, ", ".join(parts[1:])]
                else:
                    del self.headers[i]
                self._changed()
                return parts[0]
        return None

    # -- structured accessors ----------------------------------------------

    @property
    def vias(self) -> list[Via]:
        return [parseVia(v) for v in self.getAll("via")]

    @property
    def topVia(self) -> Via:
        via = self._cache.get("via")
        if via is None:
            value = self.get("via")
            if value is None:
                raise ParseError("Missing Via")
            via = self._cache["via"] = parseVia(splitCommas(value)[0] if "," in value else value)
        return via  # type: ignore[return-value]

    @property
    def fromAddr(self) -> NameAddr:
        addr = self._cache.get("from")
        if addr is None:
            addr = self._cache["from"] = parseNameAddr(self._required("from"))
        return addr  # type: ignore[return-value]

    @property
    def toAddr(self) -> NameAddr:
        addr = self._cache.get("to")
        if addr is None:
            addr = self._cache["to"] = parseNameAddr(self._required("to"))
        return addr  # type: ignore[return-value]

    @property
    def callID(self) -> str:
        return self._required("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        cseq = self._cache.get("cseq")
        if cseq is None:
            cseq = self._cache["cseq"] = parseCSeq(self._required("cseq"))
        return cseq  # type: ignore[return-value]

    @property
    def contacts(self) -> list[NameAddr]:
        return [parseNameAddr(v) for v in self.getAll("contact")]

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
        lines = [self.startLine()]
        for name, value in self.headers:
            if name != "content-length":
                lines.append(f"{_CANONICAL.get(name) or canonicalName(name)}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    __bytes__ = toBytes


class Request(Message):
    """
    A SIP request.

    @ivar method: the method, case-sensitive as RFC 3261 says.
    @ivar uri: the Request-URI text; L{requestURI} parses it.
    """

    __slots__ = ("_uri", "method", "uri")

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
        self._uri: URI | None = None

    @property
    def requestURI(self) -> URI:
        if self._uri is None:
            self._uri = parseURI(self.uri)
        return self._uri

    def startLine(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("code", "reason")

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

    def startLine(self) -> str:
        return f"{self.version} {self.code} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.reason}>"


class BadRequest(ParseError):
    """
    A request that parsed far enough to be answered, but is invalid.

    @ivar request: the partly parsed L{Request}: enough (Via, From, To,
        Call-ID, CSeq) to build the error response with L{makeResponse}, or
        C{None} when even those are unusable and the message must be
        dropped.
    """

    def __init__(self, reason: str, status: int, request: Request | None) -> None:
        super().__init__(reason, status)
        self.request = request


# One unfolded header line, name and value; used when the section has no folding.
_HEADER_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.M)


def _splitHeaders(text: str) -> tuple[str, list[list[str]]]:
    """
    Split the header section into the start line and unfolded header
    fields with lower-case, expanded names.
    """
    start, sep, block = text.partition("\n")
    start = start.rstrip("\r")
    block = block.rstrip("\r\n")
    if not block:
        return start, []
    if "\n " not in block and "\n\t" not in block:
        # Fast path: one compiled pattern over the whole section.
        fields = _HEADER_LINE.findall(block)
        if len(fields) == block.count("\n") + 1:
            compact = COMPACT_NAMES
            return start, [
                [compact.get(name, name) if len(name) == 1 else name, value]
                for name, value in ((n.lower(), v) for n, v in fields)
            ]
    return start, _splitFolded(block)


def _splitFolded(block: str) -> list[list[str]]:
    """The general case: folded lines, and precise errors."""
    headers: list[list[str]] = []
    for line in block.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        c = line[0]
        if c == " " or c == "\t":
            if not headers:
                raise ParseError("Continuation line without a header")
            headers[-1][1] = f"{headers[-1][1]} {line.strip()}".strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ParseError("Header line without a colon")
        name = name.rstrip(" \t").lower()
        if not isToken(name):
            raise ParseError("Invalid header name")
        if len(name) == 1:
            name = COMPACT_NAMES.get(name, name)
        headers.append([name, value.strip()])
    return headers


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
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        bodyStart = end + 4
    else:
        end = data.find(b"\n\n")
        if end < 0:
            # A message with no body and no blank line (tolerated on UDP).
            end = len(data)
            bodyStart = end
        else:
            bodyStart = end + 2
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        head = data[:end].decode("utf-8", "surrogateescape")
    start, headers = _splitHeaders(head)
    body = data[bodyStart:]
    if start.startswith("SIP/"):
        return _parseResponse(start, headers, body)
    return _parseRequest(start, headers, body)


def _checkLength(message: Message, body: bytes) -> bytes:
    lengths = message._lookup().get("content-length")
    if not lengths:
        return body
    if len(lengths) > 1:
        raise ParseError("Multiple Content-Length headers")
    text = lengths[0]
    if not text.isdigit():
        raise ParseError("Invalid Content-Length")
    length = int(text)
    if length > len(body):
        raise ParseError("Content-Length larger than the body")
    return body[:length] if length < len(body) else body


def _parseResponse(start: str, headers: list[list[str]], body: bytes) -> Response:
    parts = start.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
        raise ParseError("Invalid status line")
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not "100" <= code <= "699":
        raise ParseError("Invalid status code")
    response = Response(int(code), parts[2] if len(parts) > 2 else "", headers, b"", "SIP/2.0")
    response.reason = parts[2] if len(parts) > 2 else ""
    response.body = _checkLength(response, body)
    _checkCommon(response)
    return response


def _parseRequest(start: str, headers: list[list[str]], body: bytes) -> Request:
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        # Without a usable request line we cannot know what to answer.
        request = None
        if len(parts) >= 3 and isToken(parts[0]):
            request = Request(parts[0], parts[1], headers)
            if _answerable(request):
                raise BadRequest("Invalid Request-Line", 400, request)
        raise ParseError("Invalid Request-Line")
    method, uri, version = parts
    request = Request(method, uri, headers, b"", version)
    if not isToken(method):
        raise ParseError("Invalid method")
    if not _answerable(request):
        raise ParseError("Missing or invalid Via, From, To, Call-ID or CSeq")
    try:
        if version.upper() != "SIP/2.0":
            if version.upper().startswith("SIP/"):
                raise ParseError("Version Not Supported", 505)
            raise ParseError("Invalid SIP version")
        request.version = "SIP/2.0"
        request.body = _checkLength(request, body)
        _checkCommon(request)
        number, cseqMethod = request.cseq
        if cseqMethod != method:
            raise ParseError("CSeq method does not match the Request-Line")
        maxForwards = request.get("max-forwards")
        if maxForwards is not None and (
            not maxForwards.isdigit() or len(maxForwards) > 3 or int(maxForwards) > _MAX_FORWARDS_LIMIT
        ):
            raise ParseError("Invalid Max-Forwards")
        parseURI(uri)
    except ParseError as e:
        raise BadRequest(e.reason, e.status, request) from None
    return request


def _answerable(request: Request) -> bool:
    """
    Does C{request} hold what an error response must copy (RFC 3261 8.2.6.2)?
    """
    index = request._lookup()
    for name in ("via", "from", "to", "call-id", "cseq"):
        values = index.get(name)
        if not values or (name != "via" and len(values) > 1):
            return False
    try:
        request.topVia  # noqa: B018 -- parse to validate
        request.cseq  # noqa: B018
        # The To tag must be readable, From may be broken (and then the 400 copies it).
        request.toAddr  # noqa: B018
    except ParseError:
        return False
    return True


def _checkCommon(message: Message) -> None:
    """Checks that requests and responses share."""
    index = message._lookup()
    for name in _SINGLE:
        values = index.get(name)
        if values is not None and len(values) > 1:
            raise ParseError(f"Multiple {canonicalName(name)} headers")
    for name in ("via", "from", "to", "call-id", "cseq"):
        if name not in index:
            raise ParseError(f"Missing {canonicalName(name)}")
    message.fromAddr  # noqa: B018 -- parse to validate
    message.toAddr  # noqa: B018
    message.cseq  # noqa: B018
    if not message.callID:
        raise ParseError("Empty Call-ID")
    vias = index["via"]
    if len(vias) > 1 or "," in vias[0]:
        for value in vias:
            for element in splitCommas(value):
                parseVia(element)
    else:
        message.topVia  # noqa: B018


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
    A response to C{request} (RFC 3261 8.2.6.2): Via, From, Call-ID, CSeq
    and To copied, a To tag added when C{toTag} is given and the request
    had none.
    """
    headers: list[list[str]] = []
    for name, value in request.headers:
        if name == "to" and toTag is not None and ";tag=" not in value.replace(" ", "").lower():
            headers.append([name, f"{value};tag={toTag}"])
        elif name in ("via", "from", "to", "call-id", "cseq"):
            headers.append([name, value])
    return Response(code, reason or REASONS.get(code, ""), headers)
