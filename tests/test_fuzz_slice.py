"""
A bounded slice of the fuzz campaign (C{fuzz/campaign.py} runs the whole
of it with atheris): seeded random mutations of the same seeds through the
same targets, the parser, the whole SIP element and the STUN server. No
exception out of the core, no failure logged, no input slower than 10 ms of
CPU time.
"""

from __future__ import annotations

import gc
import random

from twisted.trial.unittest import SynchronousTestCase

from fuzz.targets import STUN_SEEDS, Targets, seeds
from tests.test_sip_torture import mutate

SEED = 91
INPUTS = 4000


class FuzzSliceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.targets = Targets()
        self.addCleanup(self.targets.close)
        # The time limit is the code's, not a collection of the whole test
        # process's garbage that happens to start during one input.
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)

    def test_sip_inputs(self) -> None:
        rng = random.Random(SEED)
        corpus = seeds()
        for _ in range(INPUTS):
            self.targets.all(mutate(rng, corpus))
        self.targets.timer.recheck()
        self.assertLess(self.targets.timer.slowest, 0.010)

    def test_stun_inputs(self) -> None:
        rng = random.Random(SEED)
        for _ in range(INPUTS):
            data = bytearray(rng.choice(STUN_SEEDS))
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data) + 1)
                kind = rng.randrange(3)
                if kind == 0 and data:
                    data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
                elif kind == 1:
                    data[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 8))))
                else:
                    del data[at : at + rng.randint(1, 8)]
            self.targets.stunServer(bytes(data))
        self.targets.timer.recheck()
