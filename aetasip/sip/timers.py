"""
Timers of a few fixed durations (RFC 3261's 64*T1 and T4), kept in FIFO
queues under a single reactor call.

Every call leaves several transactions lingering for 32 seconds, each
with timers. A Twisted DelayedCall is about six objects (its arguments,
its canceller and resetter); at a thousand calls a second that is hundreds
of thousands of long-lived objects for the garbage collector to scan.
Here a timer is three items (deadline, owner, method name) appended to the
queue of its duration, and no object of its own: a tuple per timer would
be one more object for each young collection to scan (and, with the
owner, one more to touch while the owner is cold in the cache), where the
long-lived queue is not scanned by young collections at all. Queues of
one duration are in deadline order by construction, so the next deadline
is the smallest head, and one DelayedCall waits for it.

There is no cancellation: the owner is called with the deadline it was
given, and ignores the call when that is no longer its deadline or its
state has moved on.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()


class FixedTimers:
    """
    @param clock: the time source.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        # Each queue holds deadline, owner, method, deadline, owner... flat.
        self._queues: dict[float, deque[Any]] = {}
        self._call: IDelayedCall | None = None
        self._stopped = False

    def after(self, delay: float, owner: object, method: str) -> float:
        """
        Call C{owner.method(deadline)} C{delay} seconds from now.

        @param delay: one of the few durations of the element (each one gets
            its own queue).
        @return: the deadline, which the owner keeps to recognise its call.
        """
        deadline = self.clock.seconds() + delay
        if self._stopped:
            return deadline
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = deque()
        queue.append(deadline)
        queue.append(owner)
        queue.append(method)
        call = self._call
        if call is None or deadline < call.getTime():
            self._arm(deadline)
        return deadline

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values()) // 3

    def stop(self) -> None:
        """Drop every timer; later ones are not kept."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._queues.clear()

    def _arm(self, deadline: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        for queue in list(self._queues.values()):
            while queue and queue[0] <= now:
                deadline = queue.popleft()
                owner = queue.popleft()
                method = queue.popleft()
                try:
                    getattr(owner, method)(deadline)
                except Exception:
                    # One owner's bug must not stop every other timer.
                    log.failure("Timer {method} of {owner} failed", method=method, owner=owner)
        if self._stopped:
            return
        heads = [queue[0] for queue in self._queues.values() if queue]
        # A callback may have armed the call for a later deadline than a head.
        if heads and (self._call is None or min(heads) < self._call.getTime()):
            self._arm(min(heads))
