"""
The self-care portal's sessions and login throttling, in memory.

A session is a random token in a cookie (HttpOnly, Secure, SameSite=Strict)
naming the number logged in and the CSRF token every form of the session
carries. Sessions end after L{IDLE} seconds without a request, or at
logout; past L{MAX_SESSIONS}, the least recently used is dropped. A
restart ends every session (the subscriber logs in again).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable

import attrs

IDLE = 1800.0
"""Seconds a session lives without a request."""

MAX_SESSIONS = 10_000
"""Sessions kept at most."""


@attrs.define
class Session:
    """
    One logged-in subscriber.

    @ivar token: the cookie's value.
    @ivar number: the account logged in.
    @ivar csrf: the token the session's forms carry.
    @ivar lastSeen: the time of its last request.
    """

    token: str
    number: str
    csrf: str
    lastSeen: float


class Sessions:
    """The portal's sessions by cookie token, least recently used first."""

    def __init__(self, clock: Callable[[], float], idle: float = IDLE, maxSessions: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.idle = idle
        self.maxSessions = maxSessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, number: str) -> Session:
        """A new session for C{number}."""
        while len(self._sessions) >= self.maxSessions:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), number, secrets.token_urlsafe(32), self.clock())
        self._sessions[session.token] = session
        return session

    def find(self, token: str | None) -> Session | None:
        """The live session of this cookie token, its idle time restarted; C{None} when there is none."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock()
        if now - session.lastSeen > self.idle:
            del self._sessions[token]
            return None
        session.lastSeen = now
        self._sessions.move_to_end(token)
        return session

    def close(self, session: Session) -> None:
        """End C{session}."""
        self._sessions.pop(session.token, None)

    def closeAll(self, number: str, keep: Session | None = None) -> None:
        """End every session of C{number} but C{keep} (after a password change)."""
        for token in [t for t, s in self._sessions.items() if s.number == number and s is not keep]:
            del self._sessions[token]


def sameToken(given: str | bytes | None, expected: str) -> bool:
    """Whether a form's CSRF token is C{expected}, compared in constant time."""
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode("utf-8", "replace")
    return hmac.compare_digest(given, expected.encode())


class LoginThrottle:
    """
    Failed logins counted per key (the account, the source address): a key
    with L{limit} failures in the last L{window} seconds is refused until
    the oldest of them leaves the window. At most L{maxKeys} keys are kept.
    """

    def __init__(
        self, clock: Callable[[], float], limit: int = 5, window: float = 900.0, maxKeys: int = 100_000
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.maxKeys = maxKeys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retryAfter(self, *keys: str) -> float:
        """Seconds until the keys may try again; 0 when they may now."""
        wait = 0.0
        for key in keys:
            times = self._recent(key)
            if len(times) >= self.limit:
                wait = max(wait, times[0] + self.window - self.clock())
        return wait

    def failed(self, *keys: str) -> None:
        """Count a failure of each key."""
        for key in keys:
            times = self._failures.get(key)
            if times is None:
                while len(self._failures) >= self.maxKeys:
                    self._failures.popitem(last=False)
                times = self._failures[key] = deque(maxlen=self.limit)
            times.append(self.clock())
            self._failures.move_to_end(key)

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of the keys."""
        for key in keys:
            self._failures.pop(key, None)
