"""
Parsing SIP messages: L{parse} turns bytes into a L{Request} or
L{Response} (L{aetasip.sip.message}).

It splits the start line and the header fields (unfolded, compact names
expanded) and parses and checks every field whose structure the core or
an application relies on: Via, From, To, Call-ID, CSeq, Max-Forwards,
Content-Length and the name-addr lists (Contact, Route, Record-Route,
Path), and the grammar of a few more a request carries. The parsed
values are kept on the message for its accessors (its C{_from}, C{_to},
C{_cseq}, C{_vias}, C{_contacts}), so once a message is parsed, none of
its accessors raises.

A peer's malformed request raises L{BadRequest}, which carries the partly
parsed request whenever it can be answered; anything else raises
L{ParseError} and is dropped. No other exception escapes L{parse}.
"""

from __future__ import annotations

import re

from aetasip.sip.errors import ParseError
from aetasip.sip.fieldnames import STORED_NAMES, canonicalName, fieldName
from aetasip.sip.headers import Via, isToken, parseCSeq, parseHeaderParams, parseNameAddr, parseVia, splitCommas
from aetasip.sip.message import Message, Request, Response
from aetasip.sip.uri import parseURI

# Headers defined as a single value: several occurrences are an error (RFC 4475 3.3.8 multi01).
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type")

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

_WS = " \t"
_isDigits = re.compile(r"[0-9]+").fullmatch
_isVersion = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I).fullmatch


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
# is kept as _splitFolded keeps it. The value is an alternation with the
# empty string rather than an optional group (a REPEAT the engine runs
# with its general machinery), and the quantifiers that can never give
# anything back are possessive: the same matches, a quarter less time.
_HEADER_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]++)[ \t]*+:[ \t]*+(.*[^ \t\r\n]|)[ \t]*+\r?$", re.M)
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


def parseTrying(data: bytes) -> Response | None:
    """
    A 100 (Trying) to an INVITE, read only as far as its client
    transaction reads it: the status line, the top Via and CSeq (RFC 3261
    17.1.3). Such a 100 only stops retransmissions and goes no further
    (16.7 step 5: a 100 is never forwarded), so the fields L{parse} checks
    besides (From, To, Contact, Record-Route, Content-Length) are never
    read: one message of a call's nine parsed at half the cost.

    @return: the response; C{None} for anything else or anything unusual
        (a malformed line, another method, a Via or CSeq that does not
        parse, bytes that are not UTF-8): L{parse} then judges it as it
        judges any message.
    """
    raw, body = _splitMessage(data)
    try:
        head = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    start, headers, error = _splitHeaders(head)
    if error is not None or not start.startswith("SIP/2.0 100 ") or len(headers) > MAX_HEADER_FIELDS:
        return None
    response = Response(100, "", headers, body)
    # Kept as sent, as parse keeps it.
    response.reason = start[12:]
    try:
        # Parsed now, kept for the client transaction layer to read.
        if response.topVia.branch is None or response.cseq[1] != "INVITE":
            return None
    except ParseError:
        return None
    return response


# The first Via field's first value, in a header section's bytes.
_FIRST_VIA = re.compile(rb"\n(?:[Vv][Ii][Aa]|[Vv])[ \t]*:[ \t]*([^\r\n,]+)")


def ackTopVia(data: bytes) -> Via | None:
    """
    The top Via of the request C{data} (an ACK), read from its bytes alone:
    what L{ServerTransactionLayer.absorbAck
    <aetasip.sip.transaction.ServerTransactionLayer.absorbAck>} needs to
    take the ACK of a final non-2xx response, whose Via is that of the
    INVITE (RFC 3261 17.1.1.3), so already parsed and cached. C{None}
    when there is none that parses.
    """
    end = data.find(b"\r\n\r\n")
    match = _FIRST_VIA.search(data, 0, end if end >= 0 else len(data))
    if match is None:
        return None
    try:
        return parseVia(match.group(1).rstrip(b" \t").decode("utf-8"))
    except (UnicodeDecodeError, ParseError):
        return None


def _splitMessage(data: bytes) -> tuple[bytes, bytes]:
    """The header section and the bytes after the empty line."""
    if data[:1] in (b"\r", b"\n"):
        # CRLFs before the start line are keep-alives (RFC 3261 7.5).
        data = data.lstrip(b"\r\n")
    # The first empty line, whatever its line ends: one search of the
    # regular expression engine, where three bytes.find (CRLF CRLF, then
    # no bare LF LF or LF CRLF before it) took three times as long.
    match = _BLANK_LINE.search(data)
    if match is None:
        # No empty line at all: tolerated on UDP for a message without body.
        head, body = data, b""
    else:
        start = match.start()
        # The CR of the last header line's CRLF is not the header section's.
        head = data[: start - 1] if data[start - 1 : start] == b"\r" else data[:start]
        body = data[match.end() :]
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
    # A line _HEADER_LINE does not take (a folded one: it starts with LWS;
    # or a malformed one) leaves fewer fields than lines.
    fields = _HEADER_LINE.findall(block)
    if len(fields) == block.count("\n") + 1:
        names = STORED_NAMES
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
