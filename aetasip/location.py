"""
Registrations: bindings of a number to the contacts where it is reached.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredLock, succeed
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
    @ivar remote: learnt from the store, as another server of the cluster
        wrote it (not persisted): this server neither writes nor deletes
        its row, nor announces its expiry, until the agent registers here
        (or its server is dead: L{LocationService.orphaned}).
    @ivar writer: read from the store: the origin of the server that
        wrote it (C{""}: unknown, or C{aetasip-admin}).
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
    remote: bool = False
    writer: str = ""


_FIELDS_FROM_STORE = (
    "expiresAt",
    "callID",
    "cseq",
    "transport",
    "source",
    "local",
    "instance",
    "regID",
    "path",
    "userAgent",
    "q",
    "registeredAt",
    "writer",
)
"""The fields of a binding that another server may have changed in the store."""


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

    Several servers on one PostgreSQL store (a cluster) each keep all the
    bindings in memory: L{reload} reads what the others changed and
    applies it (L{aetasip.cluster.locationsync} calls it when PostgreSQL
    announces a change). A server writes and deletes only the bindings
    registered with it; the others' (C{remote}) leave its memory silently
    when they expire. Writes and reloads take turns, so a reload never
    reads the store before this server's own last changes are in it.

    @param clock: the time source (L{IReactorTime}).
    @param store: an L{aetasip.store.AsyncStore} or C{None} (memory only).
    @param flushInterval: seconds between writes of changed bindings.
    """

    SWEEP_INTERVAL = 1.0

    _keep = 0.5
    """
    The share of a refresh's interval the stored expiry must still cover
    for the refresh to need no write (see L{refresh}).
    """

    @property
    def writeThrough(self) -> bool:
        """
        Whether the registrar answers a REGISTER only once its changes are
        in the store (L{writeNow}): set in a cluster with a floating
        address (L{aetasip.cluster.service.ClusterService}), where a
        registration answered but not yet written would be lost with the
        active server. A refresh then needs no write only while the stored
        expiry covers three quarters of its interval: the other servers'
        copy outlives the agent's next refresh with a margin, however
        early in its interval the agent refreshes.
        """
        return self._keep != 0.5

    @writeThrough.setter
    def writeThrough(self, value: bool) -> None:
        self._keep = 0.75 if value else 0.5

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
        # Rows to delete: None at once, or an expiry (only if not refreshed since).
        self._deleted: dict[tuple[str, str], float | None] = {}
        self._storeTurn = DeferredLock()
        self.origin: str | None = None
        # Whether a remote binding's server is dead and this one announces
        # its expiry (set by aetasip.cluster.service.ClusterService).
        self.orphaned: Callable[[Binding], bool] | None = None
        self._sweeper: IDelayedCall | None = None
        self._flusher: IDelayedCall | None = None
        self._stopped = False

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Restore unexpired bindings from the store and start sweeping."""
        self._stopped = False
        self._sweeper = self.clock.callLater(self.SWEEP_INTERVAL, self._sweep)
        if self.store is None:
            return succeed(None)

        def load() -> Deferred[None]:
            d: Deferred[list[Binding]]
            if self.origin is None:
                # One server: the rows that expired while it was down are
                # deleted now and their expiry announced, each once (as a
                # cluster's active server does for a dead server's): a
                # webhook receiver told 'registered' is told the end too.
                now = self.clock.seconds()
                d = self.store.expireOrphanBindings([], now)
                d.addCallback(self._expiredWhileDown)
                d.addCallback(lambda _: self.store.loadBindings(now))
            else:
                # In a cluster the rows that expired meanwhile are the active
                # server's to delete, announcing each expiry once.
                d = self.store.allBindings(self.clock.seconds())
            return d.addCallback(restored)

        def restored(bindings: list[Binding]) -> None:
            known = {(b.aor, b.contact) for bs in self._byAOR.values() for b in bs}
            for binding in bindings:
                if (binding.aor, binding.contact) not in known:
                    binding.storedExpiresAt = binding.expiresAt
                    # In a cluster, another server's binding (or an earlier
                    # run's: a new origin at each start) stays its writer's
                    # until the agent registers here again.
                    binding.remote = self.origin is not None and binding.writer != self.origin
                    self._insert(binding)
            log.info("Restored {count} bindings from the store", count=len(bindings))

        return self._storeTurn.run(load)

    def _expiredWhileDown(self, expired: list[Binding]) -> None:
        if expired:
            log.info("{count} bindings expired while the service was down: announced 'expired'", count=len(expired))
        for binding in expired:
            self.emit("expired", binding)

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
        binding.remote = False
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
            self._deleted[old] = None
            binding.contact = contact
        binding.remote = False
        self._schedule(binding)
        now = self.clock.seconds()
        # A refresh soon after the last write needs none: the stored expiry
        # still covers half the new interval, so after a restart the binding
        # outlives the agent's next refresh. This keeps an agent in a
        # registration loop (or a REGISTER storm) from becoming a write storm.
        # (Three quarters in a cluster: see writeThrough.)
        if moved or binding.storedExpiresAt - now < (binding.expiresAt - now) * self._keep:
            self._changed(binding)
        self.emit("refreshed", binding)

    def remove(self, binding: Binding, kind: str = "unregistered") -> None:
        if not self._discard(binding):
            return
        key = (binding.aor, binding.contact)
        self._dirty.pop(key, None)
        # An expiry deletes the row only if nobody refreshed it since (another
        # server of the cluster, where the agent registers now).
        self._deleted[key] = binding.expiresAt if kind == "expired" else None
        self._scheduleFlush()
        self.emit(kind, binding)

    def forget(self, binding: Binding) -> None:
        """Take the binding of C{binding}'s number and contact out of memory, silently (its row is gone)."""
        for known in list(self._byAOR.get(binding.aor, ())):
            if known.contact == binding.contact:
                self._discard(known)

    def _discard(self, binding: Binding) -> bool:
        """Take C{binding} out of memory; whether it was there."""
        bindings = self._byAOR.get(binding.aor)
        if bindings is None or binding not in bindings:
            return False
        bindings.remove(binding)
        if not bindings:
            del self._byAOR[binding.aor]
        return True

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
                if binding.remote:
                    # Its server deletes its row and announces its expiry,
                    # unless it is dead: then this one, if it is its heir.
                    self._discard(binding)
                    if self.orphaned is not None and self.orphaned(binding):
                        self._expireOrphan(binding)
                else:
                    self.remove(binding, "expired")
        self._sweeper = self.clock.callLater(self.SWEEP_INTERVAL, self._sweep)

    def _expireOrphan(self, binding: Binding) -> None:
        """
        Delete the row of C{binding}, expired, whose server is dead, and
        announce its expiry if this server deleted it (another server
        doing the same at once finds nothing to delete: one event).
        """
        if self.store is None:
            return

        def delete() -> Deferred[bool]:
            return self.store.expireOrphanBinding(  # type: ignore[no-any-return]
                binding.aor, binding.contact, binding.expiresAt, origin=self.origin
            )

        def deleted(done: bool) -> None:
            if done:
                self.emit("expired", binding)

        self._storeTurn.run(delete).addCallbacks(
            deleted,
            lambda f: log.failure("Deleting the expired binding of a dead server failed", f),
        )

    # -- persistence ------------------------------------------------------

    def _changed(self, binding: Binding) -> None:
        key = (binding.aor, binding.contact)
        self._deleted.pop(key, None)
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
        if self.store is None or (not self._dirty and not self._deleted and not self._storeTurn.locked):
            return succeed(None)
        # One write or reload at a time; the next waits for the one under way.
        return self._storeTurn.run(self._write)

    def writeNow(self) -> Deferred[None]:
        """
        Write what changed, now (after the write under way, if any): the
        returned Deferred fires once the changes made so far are in the
        store, and fails if that write fails (the changes stay queued and
        are tried again at the next flush). Changes made while a write is
        under way are written together by the next one (a group commit).
        """
        if self.store is None or (not self._dirty and not self._deleted):
            return succeed(None)
        return self._storeTurn.run(self._write, True)

    def _write(self, report: bool = False) -> Deferred[None]:
        if not self._dirty and not self._deleted:
            return succeed(None)
        dirty, deleted = list(self._dirty.values()), dict(self._deleted)
        self._dirty, self._deleted = {}, {}
        for binding in dirty:
            binding.storedExpiresAt = binding.expiresAt
        now = [key for key, bound in deleted.items() if bound is None]
        expired = [(aor, contact, bound) for (aor, contact), bound in deleted.items() if bound is not None]
        origin = {} if self.origin is None else {"origin": self.origin}
        d = self.store.deleteBindings(now, **origin) if now else succeed(None)
        d.addCallback(lambda _: self.store.expireBindings(expired, **origin) if expired else None)
        d.addCallback(lambda _: self.store.saveBindings(dirty, **origin) if dirty else None)

        def failed(failure: Any) -> Any:
            log.failure("Writing {count} bindings to the store failed; retrying", failure, count=len(dirty))
            for binding in dirty:
                binding.storedExpiresAt = 0.0
                key = (binding.aor, binding.contact)
                # Removed since the write began: its deletion is what to retry.
                if key not in self._deleted:
                    self._dirty.setdefault(key, binding)
            for key, bound in deleted.items():
                if key not in self._dirty:
                    self._deleted.setdefault(key, bound)
            self._scheduleFlush()
            return failure if report else None

        d.addErrback(failed)
        return d

    # -- the other servers of a cluster -------------------------------------

    def reload(self, numbers: Iterable[str] | None = None) -> Deferred[None]:
        """
        Read the bindings of C{numbers} (of every number when C{None}) from
        the store and apply what other servers changed (L{apply}), after
        this server's own writes under way.

        @return: a L{Deferred} firing once applied, failing when the store
            cannot be read.
        """
        if self.store is None:
            return succeed(None)
        wanted = None if numbers is None else sorted(set(numbers))

        def read() -> Deferred[None]:
            now = self.clock.seconds()
            if wanted is None:
                d: Deferred[list[Binding]] = self.store.allBindings(now)
            else:
                d = self.store.bindingsOf(wanted, now)
            return d.addCallback(self.apply, wanted)

        return self._storeTurn.run(read)

    def apply(self, stored: list[Binding], numbers: Iterable[str] | None = None) -> None:
        """
        Make memory match the store's bindings C{stored} of C{numbers}
        (every number when C{None}), except where this server changed a
        binding that it has not written yet: new rows are added, changed
        ones (another expiry than this server knows stored) updated,
        missing ones removed. Nothing is written, nor announced to
        listeners: the server that made the change did that.
        """
        now = self.clock.seconds()
        found = {(b.aor, b.contact): b for b in stored if b.expiresAt > now}
        aors = set(self._byAOR) | {aor for aor, _ in found} if numbers is None else set(numbers)
        for aor in aors:
            for binding in list(self._byAOR.get(aor, ())):
                key = (binding.aor, binding.contact)
                if key not in found and key not in self._dirty:
                    self._discard(binding)
        for key, row in found.items():
            if key in self._dirty:
                continue
            if key in self._deleted:
                bound = self._deleted[key]
                if bound is None or row.expiresAt <= bound:
                    continue
                # Refreshed elsewhere after it expired here: the new row stays.
                del self._deleted[key]
            current = next((b for b in self._byAOR.get(row.aor, ()) if b.contact == row.contact), None)
            if current is None:
                row.storedExpiresAt = row.expiresAt
                row.remote = True
                self._insert(row)
            elif row.expiresAt != current.storedExpiresAt:
                if (row.transport, row.source) != (current.transport, current.source):
                    current.connection = None
                for name in _FIELDS_FROM_STORE:
                    setattr(current, name, getattr(row, name))
                current.storedExpiresAt = row.expiresAt
                current.remote = True
                self._schedule(current)
