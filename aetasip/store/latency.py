"""
How long the store takes to answer: L{LatencyHistogram} counts the
requests of an L{aetasip.store.AsyncStore} by duration (from the call to
the result, the wait for a free store thread included), in cumulative
buckets as Prometheus histograms have them.
"""

from __future__ import annotations

from bisect import bisect_left

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the buckets, in seconds (the last bucket, +Inf, is implied)."""


class LatencyHistogram:
    """
    Requests by duration.

    @ivar counts: requests per bucket (not cumulative; the last one is +Inf).
    @ivar total: seconds of every request added up.
    @ivar failures: requests that failed.
    """

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.failures = 0

    def observe(self, seconds: float, failed: bool = False) -> None:
        self.counts[bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.failures += failed

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """C{(upper bound, requests at most that long)} for each bucket, C{+Inf} last."""
        result, running = [], 0
        for bound, count in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result
