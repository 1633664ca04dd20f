"""
Signed dialog tokens: what the proxy writes into its own Record-Route URI
(C{;dlg=TOKEN}) so that an in-dialog request can be routed even when the
dialog table does not know it any more (the service restarted, or a backup
server took over on the same store).

The token holds what routing needs: the method that made the dialog, the
branch key, the caller's and callee's numbers, and the two legs'
signalling addresses (transport, address and port, and our socket). It is
signed with a keyed BLAKE2b MAC over that and the dialog's Call-ID and
caller tag (which the request carries anyway), with a key shared through
the store: a token copied into another dialog, or edited, does not verify,
so nobody can make the service send to an address of their choosing.

It travels in every message of the call's set-up and every in-dialog
request, so it is packed in binary (about 80 characters for IPv4 legs):
longer Route headers cost every party of every call.

The same key signs the branch of every INVITE the proxy forwards
(L{forwardBranch}), so that another server of the cluster can CANCEL it
and recognise its responses (L{aetasip.calls.takeover}).
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct

import attrs

from aetasip.calls.call import Leg
from aetasip.sip import base64url
from aetasip.sip.headers import Via
from aetasip.sip.message import Response
from aetasip.sip.transaction import MAGIC_COOKIE

# 96 bits of MAC: a forger gets one try per request sent to us.
_MAC_BYTES = 12
_VERSION = 1
_METHODS = ("INVITE", "SUBSCRIBE", "REFER")
_TRANSPORTS = ("udp", "tcp", "tls")
_PORT = struct.Struct("!H")
# A derived branch is as long as a random one (aetasip.sip.client.newBranch):
# 40 bits of MAC (a forger gets one guess a packet) and 24 bits naming
# the target among a call's forks.
_MAC = 5
_DIGEST = 3
_BRANCH_LENGTH = len(MAGIC_COOKIE) + 2 * (_MAC + _DIGEST)


@attrs.frozen
class TokenLeg:
    """A leg as a token carries it."""

    transport: str
    source: tuple[str, int]
    local: tuple[str, int]

    def leg(self) -> Leg:
        return Leg(self.source, self.transport, self.local)


@attrs.frozen
class DialogToken:
    """What a verified token says about its dialog."""

    method: str
    caller: str
    callee: str
    key: str
    callerLeg: TokenLeg
    calleeLeg: TokenLeg
    callerTag: str


def _packAddress(host: str, port: int) -> bytes:
    packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    return bytes((len(packed),)) + packed + _PORT.pack(port)


# Legs packed already: the same agents call and are called again and again.
_packedLegs: dict[tuple[str, tuple[str, int], tuple[str, int]], bytes] = {}
_PACKED_LEGS = 4096


def _packLeg(leg: Leg) -> bytes:
    key = (leg.transport, leg.source, leg.local)
    packed = _packedLegs.get(key)
    if packed is None:
        packed = (
            bytes((_TRANSPORTS.index(leg.transport),))
            + _packAddress(leg.source[0], leg.source[1])
            + _packAddress(leg.local[0], leg.local[1])
        )
        if len(_packedLegs) >= _PACKED_LEGS:
            _packedLegs.clear()
        _packedLegs[key] = packed
    return packed


class _Reader:
    """Reads a payload front to back; any overrun raises ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        end = self.at + n
        if end > len(self.data):
            raise ValueError("short token")
        chunk = self.data[self.at : end]
        self.at = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def text(self) -> str:
        return self.take(self.byte()).decode("utf-8", "surrogateescape")

    def address(self) -> tuple[str, int]:
        size = self.byte()
        if size not in (4, 16):
            raise ValueError("bad address")
        host = socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, self.take(size))
        return host, _PORT.unpack(self.take(2))[0]

    def leg(self) -> TokenLeg:
        transport = _TRANSPORTS[self.byte()]
        return TokenLeg(transport, self.address(), self.address())


class DialogSigner:
    """
    Makes and checks dialog tokens with one secret key.

    @param key: the MAC key (the store's C{dialog-token} secret, or the
        configured C{calls.dialog_key}).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        # BLAKE2b takes at most 64 bytes of key: a longer one is hashed first.
        self._macKey = key if len(key) <= 64 else hashlib.blake2b(key).digest()
        # Keyed once: a copy a branch saves hashing the key block each time.
        self._branchHasher = hashlib.blake2b(key=self._macKey, digest_size=_MAC, person=b"aetasip-branch")

    def _mac(self, payload: bytes, callID: str, callerTag: str) -> bytes:
        message = b"\0".join(
            (payload, callID.encode("utf-8", "surrogateescape"), callerTag.encode("utf-8", "surrogateescape"))
        )
        return hashlib.blake2b(message, key=self._macKey, digest_size=_MAC_BYTES).digest()

    def branchMAC(self, message: bytes) -> bytes:
        """
        A 40-bit MAC over C{message}, for the branches of forwarded INVITEs
        (L{forwardBranch}): the same key as the tokens, another BLAKE2b
        personalisation, so one never verifies as the other.
        """
        mac = self._branchHasher.copy()
        mac.update(message)
        return mac.digest()

    def sign(
        self,
        method: str,
        callID: str,
        callerTag: str,
        caller: str,
        callee: str,
        key: str,
        callerLeg: Leg,
        calleeLeg: Leg,
    ) -> str:
        """
        The token for a branch of a dialog-creating request (URI-safe:
        base64url).
        """
        numbers = f"{caller}\0{callee}\0{key}".encode("utf-8", "surrogateescape")
        if len(numbers) > 255:
            raise ValueError(numbers)
        payload = b"".join(
            (
                bytes((_VERSION, _METHODS.index(method), len(numbers))),
                numbers,
                _packLeg(callerLeg),
                _packLeg(calleeLeg),
            )
        )
        data = payload + self._mac(payload, callID, callerTag)
        return base64url.encode(data).rstrip("=")

    def verify(self, token: str, callID: str, tags: tuple[str | None, str | None]) -> DialogToken | None:
        """
        The dialog C{token} describes, if it was signed by us for this
        Call-ID and one of C{tags} (From and To of the request: either may
        be the caller's); else C{None}.
        """
        if len(token) > 1024:
            return None
        try:
            data = base64url.decode(token + "=" * (-len(token) % 4))
        except ValueError:  # binascii.Error, or a non-ASCII token
            return None
        if len(data) <= _MAC_BYTES:
            return None
        payload, mac = data[:-_MAC_BYTES], data[-_MAC_BYTES:]
        for tag in tags:
            if tag is not None and hmac.compare_digest(mac, self._mac(payload, callID, tag)):
                callerTag = tag
                break
        else:
            return None
        try:
            reader = _Reader(payload)
            if reader.byte() != _VERSION:
                return None
            method = _METHODS[reader.byte()]
            caller, callee, key = reader.text().split("\0")
            token_ = DialogToken(method, caller, callee, key, reader.leg(), reader.leg(), callerTag)
        except (ValueError, IndexError):
            # Signed by us but unreadable: only a key shared with another
            # version of the service could do that.
            return None
        if reader.at != len(payload):
            return None
        return token_


def callerHost(via: Via) -> str:
    """The address a request with this (stamped) top Via came from."""
    host = via.params.get("received") or via.host
    return host[1:-1] if host.startswith("[") else host


# Digests of targets already seen: the same bindings are called again and again.
_digests: dict[tuple[str, str], bytes] = {}
_DIGESTS = 4096


def _targetDigest(number: str, contact: str) -> bytes:
    digest = hashlib.blake2b(f"{number}\0{contact}".encode("utf-8", "surrogateescape"), digest_size=_DIGEST).digest()
    if len(_digests) >= _DIGESTS:
        _digests.clear()
    _digests[(number, contact)] = digest
    return digest


def _branch(signer: DialogSigner, via: Via, callID: str, fromTag: str | None, cseq: int, digest: bytes) -> str:
    # The caller's Via as stamped on arrival (received): the same text in
    # its INVITE, its CANCEL and the responses.
    params = via.params
    text = f"{params.get('branch') or ''}\0{params.get('received') or via.host}\0{callID}\0{fromTag or ''}\0{cseq}\0"
    return MAGIC_COOKIE + (signer.branchMAC(text.encode("utf-8", "surrogateescape") + digest) + digest).hex()


def forwardBranch(
    signer: DialogSigner, via: Via, callID: str, fromTag: str, cseq: int, number: str, contact: str, loop: str
) -> str:
    """
    The branch of the copy of an INVITE sent to the binding C{contact} of
    C{number}: C{via} is the INVITE's top Via as it reached us (stamped
    with where it came from), C{callID}, C{fromTag} and C{cseq} (number)
    its own, C{loop} its loop tag (RFC 3261 16.6 step 8).
    """
    digest = _digests.get((number, contact)) or _targetDigest(number, contact)
    branch = _branch(signer, via, callID, fromTag, cseq, digest)
    return f"{branch}.{loop}" if loop else branch


def verifiedCaller(signer: DialogSigner, response: Response) -> Via | None:
    """
    The caller's Via of C{response}, a response to an INVITE a server of
    the cluster forwarded (its top Via's branch verifies); else C{None}.
    """
    vias = response.vias
    if len(vias) < 2:
        return None
    base = (vias[0].branch or "").split(".", 1)[0]
    if len(base) != _BRANCH_LENGTH or not base.startswith(MAGIC_COOKIE):
        return None
    number, method = response.cseq
    if method != "INVITE":
        return None
    try:
        raw = bytes.fromhex(base[len(MAGIC_COOKIE) :])
    except ValueError:
        return None
    expected = _branch(signer, vias[1], response.callID, response.fromAddr.tag, number, raw[_MAC:])
    return vias[1] if hmac.compare_digest(expected, base) else None
