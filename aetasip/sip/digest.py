"""
HTTP Digest authentication for SIP (RFC 3261 section 22, RFC 7616, RFC 8760).

Sans-IO: nothing here reads a socket or a reactor; the current time comes
from an injected callable returning POSIX seconds.

The server keeps no per-challenge state. A nonce carries the time it was
minted and a random part, authenticated with an HMAC keyed by a secret, so
any server holding the secret (a main and a backup sharing it) can tell a
nonce it minted from a forged one and how old it is. The only state is the
highest nonce-count seen per nonce in use, for replay protection; it is
bounded in size and forgets nonces as they expire.

Typical use, once per request carrying credentials::

    params = parseDigest(request.get("authorization"))
    algorithm = algorithmOf(params)  # also the key of the HA1 to look up
    credentials = ...  # the account of params["username"]
    verdict = authenticator.verify(params, "REGISTER", credentials.ha1[algorithm], request.body)
    if verdict is Verdict.STALE:
        ...  # 401 with authenticator.challenges(stale=True)

Checking that C{params["uri"]} names the Request-URI (RFC 3261 22.4 and
RFC 7616 3.4.6) is left to the caller, which knows the request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from urllib.parse import unquote

from aetasip.sip import base64url

__all__ = ["DigestAuthenticator", "Verdict", "algorithmOf", "computeResponse", "parseDigest"]

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

# Upper-cased spelling on the wire to our name. The -sess variants are not
# offered (every challenge names its algorithm and qop explicitly) and so
# not accepted either.
_ALGORITHM_NAMES = {"MD5": "MD5", "SHA-256": "SHA-256"}

_HEX = frozenset("0123456789abcdefABCDEF")

# Start of a credentials value: the scheme, then at least one LWS.
_SCHEME = re.compile(r"[ \t\r\n]*digest[ \t\r\n]+[ \t\r\n,]*", re.IGNORECASE)

# One auth-param and the separator after it (RFC 7616 3.4, RFC 7235 2.1):
# token "=" ( token / quoted-string ). Values that should be quoted are
# accepted unquoted and the other way round, as agents get this wrong.
# Empty list elements (",,") are skipped, as RFC 7230 7 asks of recipients.
# The last alternative takes any other single character: as something
# always matches, findall() scans the value without gaps, in C, and a
# match of that group means the value is malformed. The quantifiers are
# possessive: what each one stops at cannot be part of it, so giving back
# characters would never help a match.
_PARAMS = re.compile(
    r"""([!#$%&'*+.^_`|~0-9A-Za-z-]++)[ \t\r\n]*+=[ \t\r\n]*+"""
    r"""(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|([^ \t\r\n",]++))"""
    r"[ \t\r\n]*+(?:,[ \t\r\n,]*+|\Z)|(.)",
    re.DOTALL,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)

# RFC 8187 ext-value: charset "'" [ language ] "'" value-chars.
_EXT_VALUE = re.compile(r"([A-Za-z0-9!#$%&+^_`{}~-]+)'[A-Za-z0-9-]*'((?:%[0-9A-Fa-f]{2}|[A-Za-z0-9!#$&+.^_`|~-])*)")
_EXT_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "iso-8859-1"}


def _decodeExtValue(value: str) -> str | None:
    """
    Decode an RFC 8187 ext-value such as C{UTF-8''J%C3%A4s%C3%B8n}, or
    return C{None} when it is malformed.
    """
    match = _EXT_VALUE.fullmatch(value)
    if match is None:
        return None
    charset = _EXT_CHARSETS.get(match.group(1).lower())
    if charset is None:
        return None
    try:
        return unquote(match.group(2), encoding=charset, errors="strict")
    except UnicodeDecodeError:
        return None


def parseDigest(value: str) -> dict[str, str] | None:
    """
    Parse the value of an C{Authorization} or C{Proxy-Authorization} header
    carrying Digest credentials.

    Parameter names are lower-cased; quoted values are unquoted and their
    backslash escapes removed; unquoted values (tokens, or what agents put
    unquoted instead) run to the next whitespace or comma. An RFC 7616
    C{username*} (RFC 8187 extended notation) is decoded into C{username}.

    @return: the parameters, or C{None} when the scheme is not Digest or
        the value is malformed (unterminated quote, stray text, a parameter
        given twice, both C{username} and C{username*}). Never raises.
    """
    start = _SCHEME.match(value)
    if start is None:
        return None
    items = _PARAMS.findall(value, start.end())
    params: dict[str, str] = {}
    for name, quoted, token, junk in items:
        if junk:
            return None
        # A token is never empty: an empty one means the value was quoted.
        if token:
            params[name.lower()] = token
        elif "\\" in quoted:
            params[name.lower()] = _QUOTED_PAIR.sub(r"\1", quoted)
        else:
            params[name.lower()] = quoted
    if not params or len(params) != len(items):  # empty, or a name repeated
        return None
    extended = params.pop("username*", None)
    if extended is not None:
        username = _decodeExtValue(extended)
        if username is None or "username" in params:
            return None
        params["username"] = username
    return params


def algorithmOf(params: Mapping[str, str]) -> str | None:
    """
    The digest algorithm of parsed credentials, which is also the key of
    the HA1 to look up in L{aetasip.auth.Credentials.ha1}.

    @return: C{"MD5"} (also when absent, RFC 7616 3.3), C{"SHA-256"}, or
        C{None} for anything else, including the C{-sess} variants.
    """
    name = params.get("algorithm")
    if name is None:
        return "MD5"
    return _ALGORITHM_NAMES.get(name.upper())


def computeResponse(
    algorithm: str,
    ha1: str,
    nonce: str,
    nc: str | None,
    cnonce: str | None,
    qop: str | None,
    method: str,
    uri: str,
    entityBody: bytes = b"",
) -> str:
    """
    The expected C{response} of a digest (RFC 7616 3.4.1, RFC 2069 when
    C{qop} is C{None}).

    @param algorithm: C{"MD5"} or C{"SHA-256"}.
    @param ha1: the hex C{H(username ":" realm ":" password)}.
    @param qop: C{"auth"}, C{"auth-int"} (the hash of C{entityBody} is
        then part of HA2) or C{None} (no C{nc} and C{cnonce}).
    @return: the lower-case hex digest.
    @raise UnicodeEncodeError: if a value holds a lone surrogate that is not
        an escaped byte.
    """
    h = _HASHES[algorithm]
    if qop == "auth-int":
        a2 = f"{method}:{uri}:{h(entityBody).hexdigest()}"
    else:
        a2 = f"{method}:{uri}"
    # surrogateescape gives back the bytes of a header decoded with it.
    ha2 = h(a2.encode("utf-8", "surrogateescape")).hexdigest()
    if qop:
        data = f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"
    else:
        data = f"{ha1}:{nonce}:{ha2}"
    return h(data.encode("utf-8", "surrogateescape")).hexdigest()


class Verdict(Enum):
    """
    The outcome of L{DigestAuthenticator.verify}.

    @cvar OK: the credentials are good.
    @cvar STALE: the response is right but the nonce expired (or its replay
        state was forgotten): challenge again with C{stale=true}, so the
        agent retries without asking its user.
    @cvar BAD: anything else (wrong password, forged nonce, replay, wrong
        realm or opaque, unsupported algorithm or qop, missing parameter):
        challenge again, or refuse.
    """

    OK = "ok"
    STALE = "stale"
    BAD = "bad"


# Nonce = base64url(mint time 8 bytes | random 9 bytes | HMAC-SHA256 16 bytes):
# 33 bytes, so 44 characters without padding. Replay state is keyed by the
# decoded payload, so other spellings of a nonce (the decoder also takes
# "+" and "/") share it.
_STAMP = struct.Struct(">Q")
_RANDOM_SIZE = 9
_PAYLOAD_SIZE = _STAMP.size + _RANDOM_SIZE
_MAC_SIZE = 16
_NONCE_LENGTH = 44

# The nonce-count recorded for a nonce used without qop: above any nc, so the
# nonce cannot be used again (RFC 2069 has no nc to tell uses apart).
_SINGLE_USE = 1 << 32


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestAuthenticator:
    """
    Mints digest challenges and checks the credentials answering them.

    @ivar realm: the realm, as in every challenge.
    @ivar opaque: the C{opaque} sent in every challenge; derived from the
        secret and realm, so servers sharing a secret send the same one.
    """

    def __init__(
        self,
        realm: str,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        nonceLifetime: float = 300,
        now: Callable[[], float] = time.time,
        secret: bytes | None = None,
        maxNonces: int = 100_000,
    ) -> None:
        """
        @param realm: the digest realm (C{sip.realm}).
        @param algorithms: the algorithms offered, one challenge each, in
            this order (C{auth.algorithms}; RFC 8760 wants SHA-256 first).
            Responses using another algorithm are L{Verdict.BAD}.
        @param nonceLifetime: seconds a nonce is accepted
            (C{auth.nonce_lifetime}).
        @param now: returns the current POSIX time in seconds.
        @param secret: the key authenticating nonces; random by default.
            Servers given the same secret and realm accept each other's
            nonces.
        @param maxNonces: most nonces whose replay state is kept.
        """
        algorithms = tuple(algorithms)
        for algorithm in algorithms:
            if algorithm not in _HASHES:
                raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        if not algorithms:
            raise ValueError("no digest algorithm")
        if maxNonces < 1:
            raise ValueError("maxNonces must be positive")
        if secret is None:
            secret = os.urandom(32)
        self.realm = realm
        self._algorithms = frozenset(algorithms)
        self._lifetime = nonceLifetime
        self._now = now
        self._maxNonces = maxNonces
        # Separate keys per use and realm, so a nonce is not valid in
        # another realm sharing the secret.
        realmBytes = realm.encode("utf-8")
        nonceKey = hmac.digest(secret, b"aetasip nonce\0" + realmBytes, "sha256").ljust(64, b"\0")
        # HMAC-SHA256 (RFC 2104) with the keyed inner and outer states made
        # once: copying them costs a third of hmac.digest() per nonce.
        self._macInner = hashlib.sha256(bytes(b ^ 0x36 for b in nonceKey))
        self._macOuter = hashlib.sha256(bytes(b ^ 0x5C for b in nonceKey))
        opaqueBytes = hmac.digest(secret, b"aetasip opaque\0" + realmBytes, "sha256")[:12]
        self.opaque = base64url.encode(opaqueBytes)
        head = f"Digest realm={_quote(realm)}, nonce="
        tail = f", opaque={_quote(self.opaque)}, algorithm="
        self._templates = [(algorithm, head, f'{tail}{algorithm}, qop="auth"') for algorithm in algorithms]
        # Nonce payload (mint time and random part) to the highest nc
        # accepted with it, in order of first use, so the oldest are first
        # to expire or be evicted.
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        # Mint time of the newest nonce evicted for room: an untracked nonce
        # this old may have been used already.
        self._evictedUpTo = -1

    def _mac(self, payload: bytes) -> bytes:
        inner = self._macInner.copy()
        inner.update(payload)
        outer = self._macOuter.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_SIZE]

    def _mintNonce(self) -> str:
        payload = _STAMP.pack(max(0, int(self._now()))) + os.urandom(_RANDOM_SIZE)
        return base64url.encode(payload + self._mac(payload))

    def _payloadOf(self, nonce: str) -> bytes | None:
        """
        The payload of C{nonce} if this authenticator (or one sharing its
        secret and realm) minted it, else C{None}.
        """
        if len(nonce) != _NONCE_LENGTH:
            return None
        try:
            raw = base64url.decode(nonce)
        except ValueError:  # binascii.Error, or a non-ASCII string
            return None
        if len(raw) != _PAYLOAD_SIZE + _MAC_SIZE:
            return None
        payload = raw[:_PAYLOAD_SIZE]
        if not hmac.compare_digest(self._mac(payload), raw[_PAYLOAD_SIZE:]):
            return None
        return payload

    def challenges(self, stale: bool = False, only: str | None = None) -> list[str]:
        """
        Values for C{WWW-Authenticate} (or C{Proxy-Authenticate}) headers,
        one per algorithm offered, in order. They share one fresh nonce: an
        agent answers one challenge only, and minting costs an HMAC.

        @param stale: add C{stale=true}, after a L{Verdict.STALE}.
        @param only: offer this algorithm alone, if it is offered at all
            (for agents that fail on a challenge they do not know).
        """
        suffix = ", stale=true" if stale else ""
        nonce = self._mintNonce()
        offered = only is not None and only in self._algorithms
        return [
            f'{head}"{nonce}"{tail}{suffix}'
            for algorithm, head, tail in self._templates
            if not offered or algorithm == only
        ]

    def precheck(self, params: Mapping[str, str]) -> bytes | None:
        """
        The checks that need no account, made before any backend lookup:
        well-formed credentials for an algorithm we offer, and a nonce we
        minted (its MAC) that is not used up (burnt by a wrong response, or
        its nonce-count not above the last one accepted).

        @return: the nonce's payload, to hand to L{verify}; C{None} when the
            credentials cannot pass whatever the password (answer a new
            challenge).
        """
        algorithm = algorithmOf(params)
        if algorithm not in self._algorithms:
            return None
        nonce = params.get("nonce")
        if (
            nonce is None
            or params.get("username") is None
            or params.get("uri") is None
            or params.get("response") is None
            or params.get("realm") != self.realm
        ):
            return None
        opaque = params.get("opaque")
        if opaque is not None and opaque != self.opaque:
            return None
        userhash = params.get("userhash")
        if userhash is not None and userhash.lower() != "false":
            # Never offered: the username would be a hash we cannot look up.
            return None
        count = self._countOf(params)
        if count is None:
            return None
        payload = self._payloadOf(nonce)
        if payload is None:
            return None
        last = self._seen.get(payload)
        if last is not None and (count == _SINGLE_USE or count <= last):
            return None
        return payload

    @staticmethod
    def _countOf(params: Mapping[str, str]) -> int | None:
        """The nonce-count of C{params}; C{None} when qop, nc or cnonce are malformed."""
        qop = params.get("qop")
        if qop is None:
            return _SINGLE_USE
        if qop != "auth" and qop != "auth-int":
            return None
        nc = params.get("nc")
        # nc-value is exactly 8LHEX; int() alone would also take "0x1" or "1_0".
        if params.get("cnonce") is None or nc is None or len(nc) != 8 or not _HEX.issuperset(nc):
            return None
        return int(nc, 16)

    def burn(self, params: Mapping[str, str]) -> None:
        """
        A wrong response used this nonce: it is good for nothing more, so
        each guess at a password costs a new challenge.
        """
        payload = self._payloadOf(params.get("nonce") or "")
        if payload is None:
            return
        seen = self._seen
        if payload not in seen:
            self._track(payload, _SINGLE_USE)
        else:
            seen[payload] = _SINGLE_USE

    def verify(
        self,
        params: Mapping[str, str],
        method: str,
        ha1: str,
        entityBody: bytes = b"",
        payload: bytes | None = None,
    ) -> Verdict:
        """
        Check credentials parsed by L{parseDigest}.

        A nonce-count must grow with each request using a nonce (the
        transaction layer absorbs retransmissions, so a repeated one is a
        replay), and a nonce used without qop is good once.

        @param method: the request method, as in HA2.
        @param ha1: the account's HA1 for C{algorithmOf(params)}.
        @param entityBody: the message body, for C{qop=auth-int}.
        @param payload: what L{precheck} returned for C{params}, if it was
            called: its checks are not made again.
        """
        if payload is None:
            payload = self.precheck(params)
            if payload is None:
                return Verdict.BAD
        algorithm = algorithmOf(params)
        count = self._countOf(params)
        assert algorithm is not None and count is not None  # checked by precheck
        qop = params.get("qop")
        nc, cnonce = (None, None) if qop is None else (params.get("nc"), params.get("cnonce"))
        try:
            expected = computeResponse(
                algorithm, ha1, params["nonce"], nc, cnonce, qop, method, params["uri"], entityBody
            )
        except UnicodeEncodeError:
            return Verdict.BAD
        response = params["response"].lower()
        if not response.isascii() or not hmac.compare_digest(expected, response):
            return Verdict.BAD
        # Only now that the response proves the password: stale=true tells
        # the agent to retry without asking its user (RFC 7616 3.3).
        now = self._now()
        minted = _STAMP.unpack_from(payload)[0]
        age = now - minted
        if age > self._lifetime:
            return Verdict.STALE
        if age < -self._lifetime:
            # From the future beyond any clock skew between servers sharing
            # the secret: the secret leaked or a clock is wrong.
            return Verdict.BAD
        return self._recordUse(payload, minted, count, now)

    def _recordUse(self, payload: bytes, minted: int, count: int, now: float) -> Verdict:
        """
        Accept nonce-count C{count} for the nonce C{payload} if it is
        greater than any accepted before.
        """
        seen = self._seen
        # Forget expired nonces: their requests are stale whatever the count.
        limit = now - self._lifetime
        while seen:
            oldest = next(iter(seen))
            if _STAMP.unpack_from(oldest)[0] >= limit:
                break
            del seen[oldest]
        last = seen.get(payload)
        if last is None:
            if minted <= self._evictedUpTo:
                # Its state may have been evicted: a fresh nonce is safer
                # than accepting a possible replay.
                return Verdict.STALE
            self._track(payload, count)
            return Verdict.OK
        if count == _SINGLE_USE or count <= last:
            return Verdict.BAD
        seen[payload] = count
        return Verdict.OK

    def _track(self, payload: bytes, count: int) -> None:
        """Start keeping the replay state of a nonce, within L{_maxNonces}."""
        seen = self._seen
        seen[payload] = count
        if len(seen) > self._maxNonces:
            evicted, _ = seen.popitem(last=False)
            self._evictedUpTo = max(self._evictedUpTo, _STAMP.unpack_from(evicted)[0])
