"""
Run only aetasip's STUNService, for load measurements.

    taskset -c 0 python benchmarks/stun_server.py --listen 127.0.0.1 --port 34780

Stops on SIGINT/SIGTERM and prints the service's counters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor

from aetasip.config import build
from aetasip.stun.service import STUNService


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", action="append", help="listen address (repeatable; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=34780)
    parser.add_argument("--alternate-port", type=int, default=None)
    parser.add_argument("--alternate-address", default=None)
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=1000000,
        help="per-source limit; the default keeps the limiter on the path without limiting one generator",
    )
    options = parser.parse_args()
    config = build(
        {
            "stun.listen": options.listen or ["127.0.0.1"],
            "stun.port": options.port,
            "stun.alternate_port": options.alternate_port,
            "stun.alternate_address": options.alternate_address,
            "stun.rate_limit": options.rate_limit,
        }
    )
    service = STUNService(config, reactor)
    reactor.callWhenRunning(service.startService)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    print(json.dumps(service.counters.asDict()))


if __name__ == "__main__":
    main()
