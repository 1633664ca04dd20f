"""
L{aetasip.sip.timers.FixedTimers}: timers of a few fixed durations under
one reactor call, fired at their exact deadlines, in order.
"""

from __future__ import annotations

import gc

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aetasip.sip.timers import FixedTimers


class Owner:
    def __init__(self, clock: Clock, name: str, fired: list[tuple[str, float, float]]) -> None:
        self.clock = clock
        self.name = name
        self.fired = fired

    def ring(self, deadline: float) -> None:
        self.fired.append((self.name, deadline, self.clock.seconds()))

    def broken(self, deadline: float) -> None:
        raise RuntimeError("owner bug")


class FixedTimersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.timers = FixedTimers(self.clock)
        self.fired: list[tuple[str, float, float]] = []

    def owner(self, name: str) -> Owner:
        return Owner(self.clock, name, self.fired)

    def test_each_fires_at_its_deadline_with_one_reactor_call(self) -> None:
        self.assertEqual(self.timers.after(32, self.owner("a"), "ring"), 32)
        self.clock.advance(1)
        self.timers.after(32, self.owner("b"), "ring")
        self.timers.after(5, self.owner("c"), "ring")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(len(self.timers), 3)
        for _ in range(40):
            self.clock.advance(1)
        self.assertEqual(self.fired, [("c", 6, 6), ("a", 32, 32), ("b", 33, 33)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.timers), 0)

    def test_a_timer_set_by_a_timer_fires_in_time(self) -> None:
        fired = self.fired

        class Chain(Owner):
            def ring(self, deadline: float) -> None:
                super().ring(deadline)
                if len(fired) == 1:
                    timers.after(5, self, "ring")

        timers = self.timers
        timers.after(32, Chain(self.clock, "chain", fired), "ring")
        timers.after(32.5, self.owner("other"), "ring")
        for _ in range(80):
            self.clock.advance(0.5)
        self.assertEqual(self.fired, [("chain", 32, 32), ("other", 32.5, 32.5), ("chain", 37, 37)])

    def test_a_failing_owner_does_not_stop_the_others(self) -> None:
        self.timers.after(5, self.owner("bad"), "broken")
        self.timers.after(5, self.owner("good"), "ring")
        self.timers.after(32, self.owner("later"), "ring")
        self.clock.advance(5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(27)
        self.assertEqual([name for name, _, _ in self.fired], ["good", "later"])

    def test_stop_drops_everything(self) -> None:
        self.timers.after(5, self.owner("a"), "ring")
        self.timers.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.timers.after(5, self.owner("b"), "ring")
        self.clock.advance(10)
        self.assertEqual(self.fired, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_timer_is_no_object_for_the_garbage_collector(self) -> None:
        # Thousands of timers linger 32 s: each would be scanned by every
        # young collection if it were an object of its own (a tuple).
        owners = [self.owner(str(i)) for i in range(100)]
        for owner in owners:
            self.timers.after(32, owner, "ring")
        kept = [item for queue in self.timers._queues.values() for item in queue]
        tracked = [item for item in kept if gc.is_tracked(item)]
        self.assertEqual(len(tracked), len(owners))
        self.assertTrue(all(any(item is owner for owner in owners) for item in tracked))
        self.clock.advance(32)
        self.assertEqual(len(self.fired), 100)
