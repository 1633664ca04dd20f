"""
Signed dialog tokens: what the proxy writes into its own Record-Route URI
(C{;dlg=TOKEN}) so that an in-dialog request can be routed even when the
dialog table does not know it any more (the service restarted, or a backup
server took over on the same store).

The token holds what routing needs: the two legs' signalling addresses,
the branch key, the caller's and callee's numbers. It is signed with
HMAC-SHA256 over that and the dialog's Call-ID and caller tag (which the
request carries anyway), with a key shared through the store: a token
copied into another dialog, or edited, does not verify, so nobody can make
the service send to an address of their choosing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import attrs

from aetasip.calls.call import Leg

# 128 bits of MAC: plenty for a token that only lives as long as a call.
_MAC_BYTES = 16
_VERSION = "1"


@attrs.frozen
class TokenLeg:
    """A leg as a token carries it."""

    transport: str
    source: tuple[str, int]
    local: tuple[str, int]

    def leg(self) -> Leg:
        return Leg(self.source, self.transport, self.local)

    @classmethod
    def of(cls, leg: Leg) -> TokenLeg:
        return cls(leg.transport, leg.source, leg.local)

    def text(self) -> str:
        return f"{self.transport},{self.source[0]},{self.source[1]},{self.local[0]},{self.local[1]}"

    @classmethod
    def parse(cls, text: str) -> TokenLeg:
        transport, host, port, localHost, localPort = text.split(",")
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(transport)
        return cls(transport, (host, int(port)), (localHost, int(localPort)))


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


class DialogSigner:
    """
    Makes and checks dialog tokens with one secret key.

    @param key: the HMAC key (the store's C{dialog-token} secret, or the
        configured C{calls.dialog_key}).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes, callID: str, callerTag: str) -> bytes:
        message = (
            payload
            + b"\0"
            + callID.encode("utf-8", "surrogateescape")
            + b"\0"
            + callerTag.encode("utf-8", "surrogateescape")
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

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
        fields = (_VERSION, method, caller, callee, key, TokenLeg.of(callerLeg).text(), TokenLeg.of(calleeLeg).text())
        payload = "|".join(fields).encode("utf-8", "surrogateescape")
        data = payload + self._mac(payload, callID, callerTag)
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    def verify(self, token: str, callID: str, tags: tuple[str | None, str | None]) -> DialogToken | None:
        """
        The dialog C{token} describes, if it was signed by us for this
        Call-ID and one of C{tags} (From and To of the request: either may
        be the caller's); else C{None}.
        """
        if len(token) > 1024:
            return None
        try:
            data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
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
            fields = payload.decode("utf-8", "surrogateescape").split("|")
            version, method, caller, callee, key, callerLeg, calleeLeg = fields
            if version != _VERSION or method not in ("INVITE", "SUBSCRIBE", "REFER"):
                return None
            return DialogToken(
                method, caller, callee, key, TokenLeg.parse(callerLeg), TokenLeg.parse(calleeLeg), callerTag
            )
        except ValueError:
            # Signed by us but unreadable: only a key shared with another
            # version of the service could do that.
            return None
