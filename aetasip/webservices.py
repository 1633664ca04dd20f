"""
The web-facing services of the tree, built for L{aetasip.tap}: the web
service (health, metrics, admin API, portal), the control socket, the
admin API on its own address, and what their admin API sees and ends in
the running service (L{makeOperations}).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service

from aetasip import config
from aetasip.calls.control import CallControl
from aetasip.operations import Operations
from aetasip.sipservice import SIPService
from aetasip.testline.service import TestLineService
from aetasip.web.api import AdminAPI
from aetasip.web.control import ControlApp, ControlSocketService
from aetasip.web.health import healthReport
from aetasip.web.metrics import CallCounters, RegistrationCounters, ServiceCollector, makeRegistry
from aetasip.web.portal import Portal
from aetasip.web.portalsettings import PortalSettings
from aetasip.web.service import AdminListenService, WebApp, WebService
from aetasip.web.settings import WebSettings
from aetasip.web.tokens import StoreTokens


def forgetter(auth: Any) -> Any:
    """
    What tells the authentication backends that cache credentials (the
    C{sql} backend) to drop a number's, once it changed in the store.
    """
    backends = [b for b in getattr(auth, "backends", [auth]) if callable(getattr(b, "forget", None))]

    def forget(number: str) -> None:
        for backend in backends:
            backend.forget(number)

    return forget


def makeOperations(sip: SIPService, testLine: TestLineService | None, reactor: Any) -> Operations:
    """
    What the admin API (and through it aetasip-admin) sees and ends in the
    running service: its calls, registrations, relay nodes and test line.
    """
    from aetasip.relay.handler import RelayHandler

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    handler = sip.proxy.media.handler
    return Operations(
        CallControl(sip.proxy),
        sip.location,
        handler.nodes if isinstance(handler, RelayHandler) else None,
        lambda: testLine.agent if testLine is not None and testLine.running else None,
        reactor.seconds,
    )


def makeWebService(
    cfg: config.Config,
    top: service.MultiService,
    sip: SIPService,
    store: Any,
    auth: Any,
    stun: Any,
    reactor: Any,
    outbox: Any = None,
    notifier: Any = None,
    callCounters: CallCounters | None = None,
    registrations: RegistrationCounters | None = None,
    operations: Operations | None = None,
    reload: Any = lambda: None,
    storeTokens: StoreTokens | None = None,
) -> WebService:
    """
    The web service: health and metrics of the running tree C{top} (with
    the counters the proxy and the location tell, the webhook's queue and
    the relay nodes of the media handler), the admin API over the store
    and the running service's C{operations}, and the portal (which mails
    its password reset links through C{outbox}).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    settings = WebSettings.fromConfig(cfg)
    handler = sip.proxy.media.handler
    collector = ServiceCollector(
        sip.core,
        sip.registrar.authentication.limits,
        sip.location,
        CallControl(sip.proxy),
        None if stun is None else stun.counters,
        transactions=sip.transactions,
        clients=sip.clients,
        callCounters=callCounters,
        registrations=registrations,
        relays=dict(getattr(handler, "nodes", None) or {}),
        notifier=notifier,
        store=store,
        reactor=reactor,
    )
    forget = forgetter(auth)
    api = AdminAPI(store, cfg["sip.realm"], settings.tokenDigests, forget, operations, reload, storeTokens)
    portal = Portal(
        store, cfg["sip.realm"], reactor.seconds, forget, sip.location, PortalSettings.fromConfig(cfg), outbox
    )
    app = WebApp(
        top, sip, api, portal, makeRegistry(collector), reactor, refreshMetrics=collector.refresh,
        serveAPI=settings.adminListen is None,
    )  # fmt: skip
    web = WebService(settings, app, reactor)
    portal.defaultURL = lambda: web.url + "/portal/"
    return web


def makeControlService(
    cfg: config.Config, top: service.MultiService, sip: SIPService, store: Any, auth: Any, reactor: Any,
    operations: Operations, reload: Any,
) -> ControlSocketService:  # fmt: skip
    """
    The control socket (C{web.control_socket}): the admin API, without
    tokens, for aetasip-admin's commands on the running service, and
    C{/health}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    settings = WebSettings.fromConfig(cfg)
    assert settings.controlSocket is not None
    api = AdminAPI(store, cfg["sip.realm"], settings.tokenDigests, forgetter(auth), operations, reload)

    async def health() -> tuple[int, dict[str, Any]]:
        return await healthReport(top, sip, store, reactor)

    return ControlSocketService(settings.controlSocket, ControlApp(api, health), reactor)


def makeAdminListenService(
    cfg: config.Config, store: Any, auth: Any, reactor: Any, operations: Operations, reload: Any,
    storeTokens: StoreTokens | None,
) -> AdminListenService:  # fmt: skip
    """
    The admin API on its own address (C{web.admin_listen}), with the bearer
    tokens it asks on C{web.listen}: the configuration's and the store's.
    """
    settings = WebSettings.fromConfig(cfg)
    api = AdminAPI(store, cfg["sip.realm"], settings.tokenDigests, forgetter(auth), operations, reload, storeTokens)
    return AdminListenService(settings, ControlApp(api, where="Admin API"), reactor)
