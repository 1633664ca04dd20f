"""
Registrations: bindings of a number to the contacts where it is reached.
"""

from __future__ import annotations

import heapq
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()


@attrs.define(slots=True, eq=False)
class Binding:
    """
    One contact of one number, and where the REGISTER really came from.

    @ivar aor: the number (the user space is one for every domain alias).
    @ivar contact: the Contact URI as the agent registered it.
    @ivar expiresAt: POSIX time at which the binding expires.
    @ivar callID: Call-ID of the REGISTER that created or refreshed it.
    @ivar cseq: its CSeq number.
    @ivar transport: C{"udp"}, C{"tcp"} or C{"tls"}.
    @ivar source: C{(host, port)} the REGISTER came from (the NAT's public side).
    @ivar local: C{(host, port)} of the listening socket that received it, so the
        agent is reached from the same port it talks to (5060 or 5070).
    @ivar instance: the C{+sip.instance} Contact parameter (RFC 5626), or C{None}.
    @ivar regID: the C{reg-id} Contact parameter, or C{None}.
    @ivar path: Path header values (RFC 3327), in order.
    @ivar userAgent: the User-Agent header, or C{""}.
    @ivar q: the q Contact parameter, or C{None}.
    @ivar registeredAt: POSIX time the binding was first created.
    @ivar connection: the live stream connection (TCP/TLS) it arrived on; not
        persisted: after a restart a TCP agent is reached when it reconnects.
    @ivar storedExpiresAt: the expiry last written to the store (not itself
        persisted), to tell which refreshes need writing.
    """

    aor: str
    contact: str
    expiresAt: float
    callID: str
    cseq: int
    transport: str
    source: tuple[str, int]
    local: tuple[str, int]
    instance: str | None = None
    regID: int | None = None
    path: list[str] = attrs.Factory(list)
    userAgent: str = ""
    q: float | None = None
    registeredAt: float = 0.0
    connection: object | None = None
    storedExpiresAt: float = 0.0


@attrs.frozen
class RegistrationEvent:
    """
    A change of registration state, for L{IRegistrationListener}s.

    @ivar kind: C{registered}, C{refreshed}, C{unregistered}, C{expired}
        or C{conflict}.
    @ivar binding: the binding concerned (for C{conflict}, the new agent's).
    @ivar time: POSIX time of the event.
    @ivar other: for C{conflict}, the binding of the agent already
        registered; else C{None}.
    @ivar outcome: for C{conflict}, what the registrar did (C{rejected},
        C{replaced}, C{allowed}); else C{""}.
    """

    kind: str
    binding: Binding
    time: float
    other: Binding | None = None
    outcome: str = ""


class LocationService:
    """
    The bindings of every number, in memory for the call path, written
    behind to the store so a restart restores them.

    Expiry is swept once a second rather than with a timer per binding.

    @param clock: the time source (L{IReactorTime}).
    @param store: an L{aetasip.store.AsyncStore} or C{None} (memory only).
    @param flushInterval: seconds between writes of changed bindings.
    """

    SWEEP_INTERVAL = 1.0

    def __init__(self, clock: IReactorTime, store: Any = None, flushInterval: float = 1.0) -> None:
        self.clock = clock
        self.store = store
        self.flushInterval = flushInterval
        self.listeners: list[Any] = []
        self._byAOR: dict[str, list[Binding]] = {}
        self._static: dict[str, list[Binding]] = {}
        self._expiries: list[tuple[float, int, Binding]] = []
        self._sequence = 0
        self._dirty: dict[tuple[str, str], Binding] = {}
        self._deleted: set[tuple[str, str]] = set()
        self._sweeper: IDelayedCall | None = None
        self._flusher: IDelayedCall | None = None
        self._flushing: Deferred[None] | None = None
        self._stopped = False

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Restore unexpired bindings from the store and start sweeping."""
        self._stopped = False
        self._sweeper = self.clock.callLater(self.SWEEP_INTERVAL, self._sweep)
        if self.store is None:
            return succeed(None)
        d: Deferred[list[Binding]] = self.store.loadBindings(self.clock.seconds())

        def restored(bindings: list[Binding]) -> None:
            for binding in bindings:
                binding.storedExpiresAt = binding.expiresAt
                self._insert(binding)
            log.info("Restored {count} bindings from the store", count=len(bindings))

        return d.addCallback(restored)

    def stop(self) -> Deferred[None]:
        """Stop sweeping and write what changed."""
        self._stopped = True
        for call in (self._sweeper, self._flusher):
            if call is not None and call.active():
                call.cancel()
        self._sweeper = self._flusher = None
        return self.flush()

    # -- queries ----------------------------------------------------------

    def lookup(self, aor: str) -> list[Binding]:
        """The registered bindings of C{aor} (what the registrar manages)."""
        now = self.clock.seconds()
        return [b for b in self._byAOR.get(aor, ()) if b.expiresAt > now]

    def targets(self, aor: str) -> list[Binding]:
        """Where a call to C{aor} goes: its registered bindings, then the service's own agents'."""
        static = self._static.get(aor)
        found = self.lookup(aor)
        return found + static if static else found

    # -- the service's own agents -------------------------------------------

    def addStatic(self, binding: Binding) -> None:
        """
        A binding of an agent inside the service (the test line): one of
        the L{targets} of its number until L{removeStatic}; never expired,
        stored or announced to listeners, and neither in L{lookup} nor in
        L{bindings} (it is no registration: an agent may still register
        the number).
        """
        self._static.setdefault(binding.aor, []).append(binding)

    def removeStatic(self, binding: Binding) -> None:
        """Forget a binding of L{addStatic}."""
        bindings = self._static.get(binding.aor, [])
        if binding in bindings:
            bindings.remove(binding)
        if not bindings:
            self._static.pop(binding.aor, None)

    def bindings(self) -> list[Binding]:
        now = self.clock.seconds()
        return [b for bs in self._byAOR.values() for b in bs if b.expiresAt > now]

    def __len__(self) -> int:
        return sum(len(bs) for bs in self._byAOR.values())

    # -- changes ----------------------------------------------------------

    def add(self, binding: Binding) -> None:
        self._insert(binding)
        self._changed(binding)
        self.emit("registered", binding)

    def refresh(self, binding: Binding, contact: str | None = None, moved: bool = False) -> None:
        """
        C{binding} (already stored) got a new expiry, Call-ID or CSeq, and
        perhaps a new C{contact} (an RFC 5626 instance that moved).

        @param moved: the agent is now reached elsewhere (a new NAT source
            port, transport or Path): written within the flush interval.
        """
        if contact is not None and contact != binding.contact:
            moved = True
            old = (binding.aor, binding.contact)
            # The old row goes; an unwritten change under the old key must
            # not write the binding back (it may be removed before the flush).
            self._dirty.pop(old, None)
            self._deleted.add(old)
            binding.contact = contact
        self._schedule(binding)
        now = self.clock.seconds()
        # A refresh soon after the last write needs none: the stored expiry
        # still covers half the new interval, so after a restart the binding
        # outlives the agent's next refresh. This keeps an agent in a
        # registration loop (or a REGISTER storm) from becoming a write storm.
        if moved or binding.storedExpiresAt - now < (binding.expiresAt - now) / 2:
            self._changed(binding)
        self.emit("refreshed", binding)

    def remove(self, binding: Binding, kind: str = "unregistered") -> None:
        bindings = self._byAOR.get(binding.aor)
        if bindings is None or binding not in bindings:
            return
        bindings.remove(binding)
        if not bindings:
            del self._byAOR[binding.aor]
        key = (binding.aor, binding.contact)
        self._dirty.pop(key, None)
        self._deleted.add(key)
        self._scheduleFlush()
        self.emit(kind, binding)

    def emit(self, kind: str, binding: Binding, other: Binding | None = None, outcome: str = "") -> None:
        if not self.listeners:
            return
        event = RegistrationEvent(kind, binding, self.clock.seconds(), other, outcome)
        for listener in self.listeners:
            try:
                listener.registrationEvent(event)
            except Exception:
                log.failure("Registration listener {listener} failed", listener=listener)

    def _insert(self, binding: Binding) -> None:
        self._byAOR.setdefault(binding.aor, []).append(binding)
        self._schedule(binding)

    def _schedule(self, binding: Binding) -> None:
        self._sequence += 1
        heapq.heappush(self._expiries, (binding.expiresAt, self._sequence, binding))

    def _sweep(self) -> None:
        now = self.clock.seconds()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            expiresAt, _, binding = heapq.heappop(expiries)
            # Stale heap entries (refreshed or removed since) are skipped.
            if binding.expiresAt == expiresAt and binding in self._byAOR.get(binding.aor, ()):
                self.remove(binding, "expired")
        self._sweeper = self.clock.callLater(self.SWEEP_INTERVAL, self._sweep)

    # -- persistence ------------------------------------------------------

    def _changed(self, binding: Binding) -> None:
        key = (binding.aor, binding.contact)
        self._deleted.discard(key)
        self._dirty[key] = binding
        self._scheduleFlush()

    def _scheduleFlush(self) -> None:
        if self.store is not None and self._flusher is None and not self._stopped:
            self._flusher = self.clock.callLater(self.flushInterval, self._timedFlush)

    def _timedFlush(self) -> None:
        self._flusher = None
        self.flush()

    def flush(self) -> Deferred[None]:
        """
        Write changed and removed bindings to the store; the returned
        Deferred fires when they are written. A failed write is logged and
        retried at the next flush: bindings are never dropped from memory.
        """
        if self.store is None or (not self._dirty and not self._deleted):
            return self._flushing if self._flushing is not None else succeed(None)
        if self._flushing is not None:
            # One write at a time; chain the next after it.
            previous = self._flushing
            return previous.addCallback(lambda _: self.flush())
        dirty, deleted = list(self._dirty.values()), list(self._deleted)
        self._dirty, self._deleted = {}, set()
        for binding in dirty:
            binding.storedExpiresAt = binding.expiresAt
        d = self.store.deleteBindings(deleted) if deleted else succeed(None)
        # Set before the callbacks: a store that answers at once (a failure
        # from a stopped store) runs done() right away, which must clear it.
        self._flushing = d
        d.addCallback(lambda _: self.store.saveBindings(dirty) if dirty else None)

        def failed(failure: Any) -> None:
            log.failure("Writing {count} bindings to the store failed; retrying", failure, count=len(dirty))
            for binding in dirty:
                binding.storedExpiresAt = 0.0
                key = (binding.aor, binding.contact)
                # Removed since the write began: its deletion is what to retry.
                if key not in self._deleted:
                    self._dirty.setdefault(key, binding)
            self._deleted.update(k for k in deleted if k not in self._dirty)
            self._scheduleFlush()

        def done(_: object) -> None:
            if self._flushing is d:
                self._flushing = None

        d.addErrback(failed)
        d.addCallback(done)
        return d
