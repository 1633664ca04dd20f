"""
C{/health}: whether the service can serve, for systemd, load balancers
and the backup server. 200 when every service of the tree runs, SIP
listens and the store answers within L{STORE_TIMEOUT} seconds; 503
otherwise, the JSON body naming what is down. It also says the server's
role in a cluster (C{active} or C{standby}: both are ready), and a server
draining on an operator's request (C{aetasip-admin node drain}) answers
503 with status C{draining}, so that keepalived's check moves the
floating address away from it.
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
    cluster = _child(services, "cluster")
    draining = bool(cluster is not None and cluster.draining)
    status = "ok" if not down else "degraded"
    if draining:
        calls = cluster.callsInProgress()
        down.append(f"draining on an operator's request ({calls} calls in progress)")
        if status == "ok":
            status = "draining"
    body = {
        "status": status,
        "role": cluster.role.name if cluster is not None else "active",
        "draining": draining,
        "store": "ok" if storeOK else "down",
        "sip": {"listening": sipListening, "ports": sip.describePorts() if sip.running else []},
        "services": {child.name: bool(child.running) for child in services},
        "down": down,
    }
    if cluster is not None:
        body["calls"] = cluster.callsInProgress()
        body["shared_work"] = cluster.holdsWork()
    return (200 if not down else 503), body


def _child(services: Any, name: str) -> Any:
    for child in services:
        if child.name == name:
            return child
    return None
