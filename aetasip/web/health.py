"""
C{/health}: whether the service can serve, for systemd, load balancers
and the backup server. 200 when every service of the tree runs, SIP
listens and the store answers within L{STORE_TIMEOUT} seconds; 503
otherwise, the JSON body naming what is down.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from aetasip.store import AsyncStore

STORE_TIMEOUT = 2.0
"""Seconds the store has to answer the health check."""


async def healthReport(services: Any, sip: Any, store: AsyncStore, reactor: Any) -> tuple[int, dict[str, Any]]:
    """
    Check the service.

    @param services: the top of the tree (every child should run).
    @param sip: the L{aetasip.sipservice.SIPService}.
    @param store: the service's L{AsyncStore}.
    @return: the HTTP status and the JSON body.
    """
    down: list[str] = []
    notRunning = [child.name for child in services if not child.running]
    down.extend(f"service {name} is not running" for name in notRunning)
    sipListening = bool(sip.running and sip.ports and sip.ready.called)
    if not sipListening:
        down.append("SIP is not listening")
    storeOK = True
    try:
        probe: Deferred[int] = store.run(store.store.schemaVersion)
        probe.addTimeout(STORE_TIMEOUT, reactor)
        await probe
    except Exception as e:
        storeOK = False
        down.append(f"the store does not answer: {type(e).__name__}")
    body = {
        "status": "ok" if not down else "degraded",
        "store": "ok" if storeOK else "down",
        "sip": {"listening": sipListening, "ports": sip.describePorts() if sip.running else []},
        "services": {child.name: bool(child.running) for child in services},
        "down": down,
    }
    return (200 if not down else 503), body
