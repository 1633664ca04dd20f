"""
L{WebService}: the web side in the service tree. One listening socket
(C{web.listen}; TLS when C{web.tls_certificate} is set) serves:

    - C{/health}: L{aetasip.web.health};
    - C{/metrics}: L{aetasip.web.metrics}, in Prometheus text format;
    - C{/api/v1/}: the admin API, L{aetasip.web.api}, unless
      C{web.admin_listen} is set: L{AdminListenService} serves it there then,
      and C{/api/v1/} answers 404 here;
    - C{/portal/}: the self-care portal, L{aetasip.web.portal}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site

from aetasip import net
from aetasip.web.api import AdminAPI
from aetasip.web.apiframe import writeJSON
from aetasip.web.health import healthReport
from aetasip.web.portal import Portal
from aetasip.web.settings import ListenAddress, WebSettings

log = Logger()


class WebApp:
    """
    The routes of the web service: C{/health}, C{/metrics}, and the admin
    API under C{/api/v1/}.
    """

    app = Klein()

    def __init__(
        self,
        services: Any,
        sip: Any,
        api: AdminAPI,
        portal: Portal,
        registry: CollectorRegistry,
        reactor: Any,
        refreshMetrics: Callable[[], Awaitable[None]] | None = None,
        serveAPI: bool = True,
    ) -> None:
        """
        @param refreshMetrics: reads what the metrics need from elsewhere
            (relay nodes, the store) before a scrape is answered.
        @param serveAPI: whether C{/api/v1/} is served here (not when the
            API has a listen address of its own).
        """
        self.serveAPI = serveAPI
        self.refreshMetrics = refreshMetrics
        self.services = services
        self.portal = portal
        self.sip = sip
        self.api = api
        self.registry = registry
        self.reactor = reactor

    @app.route("/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        status, body = await healthReport(self.services, self.sip, self.api.store, self.reactor)
        return writeJSON(request, status, body)

    @app.route("/metrics", methods=["GET"])
    async def metrics(self, request: IRequest) -> bytes:
        if self.refreshMetrics is not None:
            await self.refreshMetrics()
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)

    @app.route("/api/v1/", branch=True)
    def adminAPI(self, request: IRequest) -> IResource | bytes:
        if not self.serveAPI:
            return writeJSON(request, 404, {"error": "no such resource"})
        return self.api.app.resource()

    @app.route("/portal/", branch=True)
    def selfCare(self, request: IRequest) -> IResource:
        return self.portal.app.resource()

    @app.route("/", methods=["GET"])
    def home(self, request: IRequest) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"Location", b"/portal/")
        return b""

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Any) -> bytes:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        if failure.check(NotFound):
            return writeJSON(request, 404, {"error": "no such resource"})
        if failure.check(MethodNotAllowed):
            return writeJSON(request, 405, {"error": f"method {request.method.decode()} not allowed here"})
        log.failure("Web: {method} {path} failed", failure, method=request.method, path=request.uri)
        return writeJSON(request, 500, {"error": "internal error; see the service's log"})


class QuietSite(Site):
    """A L{Site} that does not log a line per request (the service logs its own start and stop)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def tlsOptions(certificate: str | None, key: str | None) -> Any:
    """
    The TLS server options of C{certificate} (a PEM file, with the key
    unless C{key} names another one), or C{None} for plain HTTP.

    @raise SystemExit: with one line when they cannot be read.
    """
    if certificate is None:
        return None
    return net.tlsServerOptions(certificate, key, "web")


class TCPWebService(service.Service):
    """
    Serves a resource on a TCP address, over HTTPS when a certificate is
    configured, with one log line at start and one at stop.

    @ivar setting: the configuration key of the address, for messages.
    @ivar what: what is served, for the log lines.
    @ivar port: the listening port while running.
    """

    setting = "web.listen"
    what = "Web service"

    def __init__(self, listen: ListenAddress, settings: WebSettings, resource: IResource, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.listen = listen
        self.settings = settings
        self.reactor = reactor
        self.site = QuietSite(resource)
        self.port: IListeningPort | None = None
        self._tls = tlsOptions(settings.certificate, settings.key)

    @property
    def url(self) -> str:
        """The service's base URL (with the real port when the address asked for port 0)."""
        assert self.port is not None
        address: Any = self.port.getHost()
        host = f"[{address.host}]" if ":" in address.host else address.host
        return f"{'https' if self._tls else 'http'}://{host}:{address.port}"

    def privilegedStartService(self) -> None:
        self._listen()
        super().privilegedStartService()

    def _listen(self) -> None:
        if self.port is not None:
            return
        factory: Any = self.site
        if self._tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self._tls, False, self.site)
        try:
            self.port = net.listenTCP(self.reactor, self.listen.host, self.listen.port, factory)
        except Exception as e:
            raise SystemExit(f"aetasip: cannot listen on {self.setting} {self.listen}: {e}") from None

    def startService(self) -> None:
        self._listen()
        super().startService()
        log.info("{what} on {url}", what=self.what, url=self.url)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        d: Deferred[None] = maybeDeferred(port.stopListening)  # type: ignore[call-overload]
        d.addCallback(lambda _: self.stopped())
        d.addCallback(lambda _: log.info("{what} stopped", what=self.what))
        return d

    def stopped(self) -> Any:
        """Called once the port is closed; what it returns (a L{Deferred}) is waited for."""
        return None


class WebService(TCPWebService):
    """
    Listens on C{web.listen} with the L{WebApp}; HTTPS when a certificate
    is configured.
    """

    name = "web"

    def __init__(self, settings: WebSettings, app: WebApp, reactor: Any = None) -> None:
        assert settings.listen is not None
        super().__init__(settings.listen, settings, app.app.resource(), reactor)
        self.app = app

    def stopped(self) -> Any:
        return self.app.portal.stop()


class AdminListenService(TCPWebService):
    """
    Listens on C{web.admin_listen} with the admin API alone (a
    L{aetasip.web.control.ControlApp} without C{/health}): the API kept on
    a management network while C{web.listen} faces subscribers. Bearer
    tokens are required as on C{web.listen}.
    """

    name = "admin"
    setting = "web.admin_listen"
    what = "Admin API"

    def __init__(self, settings: WebSettings, app: Any, reactor: Any = None) -> None:
        assert settings.adminListen is not None
        super().__init__(settings.adminListen, settings, app.app.resource(), reactor)
        self.app = app
