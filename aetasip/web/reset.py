"""
The links that reset a portal password, mailed to the account's e-mail
address: a token signed with a secret kept in the store (every server on
the same store accepts the others' links; C{itsdangerous}), holding the
number and a fingerprint of its portal password as it was. It expires
after C{portal.reset_lifetime} seconds, and works once: setting a new
password changes the fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

SALT = "aetasip-portal-reset"


def fingerprint(portalPasswordHash: str | None) -> str:
    """What a token remembers of the portal password it replaces."""
    return hashlib.sha256((portalPasswordHash or "").encode()).hexdigest()[:32]


class ResetTokens:
    """
    Makes and checks reset tokens.

    @param secret: the signing key (the store's C{portal-reset} secret).
    @param lifetime: seconds a token is valid.
    @param clock: the time (seconds), for the expiry.
    """

    def __init__(self, secret: bytes, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime

        class Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self._serializer = URLSafeTimedSerializer(secret, salt=SALT, signer=Signer)

    def make(self, number: str, portalPasswordHash: str | None) -> str:
        return self._serializer.dumps([number, fingerprint(portalPasswordHash)])

    def number(self, token: str) -> tuple[str, str] | None:
        """
        The number and fingerprint C{token} was made for, or C{None} when
        it is forged, damaged or expired.
        """
        if not token or len(token) > 500:
            return None
        try:
            value = self._serializer.loads(token, max_age=int(self.lifetime))
        except BadSignature:
            return None
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
            return None
        return value[0], value[1]

    @staticmethod
    def stillValid(remembered: str, portalPasswordHash: str | None) -> bool:
        """Whether the password is still the one the token was made for (it was not used)."""
        return hmac.compare_digest(remembered, fingerprint(portalPasswordHash))
