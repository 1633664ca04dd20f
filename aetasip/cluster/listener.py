"""
L{NotificationListener}: PostgreSQL C{LISTEN} on a connection of its own,
in a thread of its own, handing each notification to the reactor.

The thread connects (again and again while the server is away, waiting
0.5 s doubling to 10 s between attempts), listens on its channels, and
checks the connection every few seconds; when it breaks, notifications
sent meanwhile are lost, so the listener says when it is connected again
and its user reads everything anew (L{aetasip.cluster.locationsync}).
The URL is the C{store.url}, given to libpq as it is: several hosts and
C{target_session_attrs} work as in C{psql}.

The same connection may hold a PostgreSQL advisory lock for its user
(L{NotificationListener.wantLock}): the work one server of the cluster
does for all (the mail outbox, quarterly call logs). The lock lives as
long as the connection: a server that dies, or loses the database, lets
go of it, and the listener says so as soon as it knows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

CHECK_INTERVAL = 5.0
"""Seconds between two checks (C{SELECT 1}) of an idle connection."""

POLL_TIMEOUT = 0.5
"""Seconds the thread waits for notifications before it looks whether to stop."""

RETRY_DELAYS = (0.5, 10.0)
"""First and longest wait between two connection attempts."""

# libpq settings that make a dead server or a cut network show within seconds.
CONNECTION_SETTINGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
    "application_name": "aetasip-listen",
}


class NotificationListener:
    """
    Listens on PostgreSQL channels.

    @param url: a libpq connection URL (the C{store.url}).
    @param channels: the channel names (identifiers, not quoted).
    @param notified: called in the reactor with C{(channel, payload)}.
    @param connected: called in the reactor each time the connection
        listens, the first time included (what was sent while it did not
        is lost).
    @param disconnected: called in the reactor with the reason when a
        connection that listened broke.
    @param lockKey: the key of the advisory lock L{wantLock} takes, if any.
    @param lockChanged: called in the reactor with C{True} when the lock
        is taken, C{False} when it is let go or lost.
    """

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        notified: Callable[[str, str], None],
        connected: Callable[[], None],
        disconnected: Callable[[str], None],
        reactor: Any = None,
        lockKey: int | None = None,
        lockChanged: Callable[[bool], None] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        for channel in channels:
            if not channel.isidentifier():
                raise ValueError(f"bad channel name {channel!r}")
        self.url = url
        self.channels = list(channels)
        self.notified = notified
        self.connected = connected
        self.disconnected = disconnected
        self.reactor = reactor
        self.listening = False
        self.lockKey = lockKey
        self.lockChanged = lockChanged
        self.lockHeld = False
        self._wantLock = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended: Deferred[None] | None = None

    def start(self) -> None:
        """Start the thread (it connects in the background)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._ended = Deferred()
        self._thread = threading.Thread(target=self._run, name="aetasip-listen", daemon=True)
        self._thread.start()

    def stop(self) -> Deferred[None]:
        """
        Stop listening.

        @return: a L{Deferred} firing once the thread has closed its connection.
        """
        self._stop.set()
        ended, self._ended, self._thread = self._ended, None, None
        if ended is None:
            from twisted.internet.defer import succeed

            return succeed(None)
        return ended

    def wantLock(self, want: bool) -> None:
        """
        Take the advisory lock (as soon as another server lets go of it),
        or let go of it. Looked at every L{POLL_TIMEOUT} seconds.
        """
        self._wantLock = want

    def _call(self, f: Callable[..., None], *args: Any) -> None:
        self.reactor.callFromThread(self._guarded, f, *args)

    def _guarded(self, f: Callable[..., None], *args: Any) -> None:
        if f is self.connected:
            self.listening = True
        elif f is self.disconnected:
            self.listening = False
        elif f is self.lockChanged:
            self.lockHeld = bool(args[0])
        try:
            f(*args)
        except Exception:
            log.failure("Handling a PostgreSQL notification failed")

    def _run(self) -> None:
        import psycopg

        delay = RETRY_DELAYS[0]
        warned = False
        ended = self._ended
        try:
            while not self._stop.is_set():
                try:
                    connection = psycopg.connect(self.url, autocommit=True, **CONNECTION_SETTINGS)
                except Exception as e:
                    if not warned:
                        warned = True
                        log.warn("Cannot listen to the store for changes ({reason}); trying again", reason=_first(e))
                    self._stop.wait(delay)
                    delay = min(delay * 2, RETRY_DELAYS[1])
                    continue
                delay = RETRY_DELAYS[0]
                if warned:
                    log.info("Listening to the store for changes again")
                warned = False
                try:
                    self._listen(connection)
                except Exception as e:
                    if not self._stop.is_set():
                        log.warn("Lost the store's change notifications ({reason}); reconnecting", reason=_first(e))
                        self._call(self.disconnected, _first(e))
                finally:
                    if self._locked:
                        self._locked = False
                        if self.lockChanged is not None:
                            self._call(self.lockChanged, False)
                    try:
                        connection.close()
                    except Exception:
                        pass
        finally:
            if ended is not None:
                self.reactor.callFromThread(ended.callback, None)

    def _listen(self, connection: Any) -> None:
        for channel in self.channels:
            connection.execute(f"LISTEN {channel}")
        self._call(self.connected)
        checked = time.monotonic()
        while not self._stop.is_set():
            self._lockAsWanted(connection)
            for notification in connection.notifies(timeout=POLL_TIMEOUT):
                self._call(self.notified, notification.channel, notification.payload)
                if self._stop.is_set():
                    return
            if time.monotonic() - checked >= CHECK_INTERVAL:
                connection.execute("SELECT 1")
                checked = time.monotonic()

    _locked = False

    def _lockAsWanted(self, connection: Any) -> None:
        if self.lockKey is None or self.lockChanged is None or self._wantLock == self._locked:
            return
        if self._wantLock:
            row = connection.execute("SELECT pg_try_advisory_lock(%s)", (self.lockKey,)).fetchone()
            if row is not None and row[0]:
                self._locked = True
                self._call(self.lockChanged, True)
        else:
            connection.execute("SELECT pg_advisory_unlock(%s)", (self.lockKey,))
            self._locked = False
            self._call(self.lockChanged, False)


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
