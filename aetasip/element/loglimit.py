"""
Log lines about what a source sends, rate-limited per source: a peer
sending garbage must not fill the journal. Up to C{perWindow} lines per
source per window; what is held back is told in one summary line when the
source next logs in a later window. Sans-IO: time from C{now}.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from aetasip.net import sourceGroup


class SourceLogLimiter:
    """
    Decides which per-source log lines are written.

    @ivar suppressed: lines held back in all.
    """

    def __init__(self, now: Callable[[], float], perWindow: int = 5, window: float = 60, maxTracked: int = 10_000):
        self.now = now
        self.perWindow = perWindow
        self.window = window
        self.maxTracked = maxTracked
        # Source group to [window start, lines written, lines held back].
        self._sources: OrderedDict[str, list[float]] = OrderedDict()
        self.suppressed = 0

    def allow(self, host: str) -> tuple[bool, int]:
        """
        May a line about C{host} be written now?

        @return: whether it may, and how many lines about C{host} were held
            back in its previous window (to say so once, in the line written).
        """
        group = sourceGroup(host)
        now = self.now()
        entry = self._sources.get(group)
        held = 0
        if entry is None or now - entry[0] >= self.window:
            if entry is not None:
                held = int(entry[2])
                del self._sources[group]
            entry = self._sources[group] = [now, 0, 0]
            while len(self._sources) > self.maxTracked:
                self._sources.popitem(last=False)
        if entry[1] >= self.perWindow:
            entry[2] += 1
            self.suppressed += 1
            return False, 0
        entry[1] += 1
        return True, held
