"""
C{twistd aetasip}: command-line options and the service tree.

This is the one place that knows the whole tree (DESIGN.md)::

    MultiService "aetasip"
    ├── StoreService
    ├── DirectoryService (accounts and groups for routing)
    ├── NotifierService (when notify.urls is set)
    ├── OutboxService (sends the mail outbox) and QuarterlyLogService
    ├── SIPService (transports, transaction layers; the registrar and the
    │   proxy built here by makeSIPService, and attached to it)
    ├── CallService (the calls: their observers and media handler; the
    │   relay's handler starts and stops its nodes: the built-in node's
    │   ports, an rtpengine node's ng sockets)
    ├── ClusterService (this server's role, the other servers' binding
    │   changes, the shared work's lock, announcements and drain flag)
    ├── TestLineService (the test number and the echo line, unless
    │   testline.enabled is False)
    ├── STUNService (unless stun.enabled is False)
    ├── WebService (health, metrics, admin API, portal; unless web.listen is None)
    ├── ControlSocketService (the admin API for aetasip-admin on a UNIX
    │   socket; unless web.control_socket is None)
    └── AdminListenService (the admin API alone on web.admin_listen, which
        takes it off web.listen; unless web.admin_listen is None)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, maybeDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from aetasip import __version__, config, quietlog
from aetasip.auth.chain import makeAuthBackend
from aetasip.auth.limits import FailureLimits
from aetasip.auth.step import Authentication
from aetasip.calls.call import CallObservers
from aetasip.calls.control import CallControl
from aetasip.calls.media import MediaHook
from aetasip.calls.proxy import Proxy
from aetasip.calls.service import CallService
from aetasip.calls.settings import callSettings
from aetasip.calls.token import DialogSigner
from aetasip.cluster.service import ClusterService
from aetasip.cluster.settings import ClusterSettings
from aetasip.directory import StoreDirectory
from aetasip.domains import LocalDomains
from aetasip.element.core import SIPCore
from aetasip.element.flood import FloodControl
from aetasip.interfaces import ICallObserverFactory, IMediaHandlerFactory
from aetasip.location import LocationService
from aetasip.notify import NotifierService
from aetasip.operations import Operations
from aetasip.plugins import chosen, namedPlugins
from aetasip.records.outbox import OutboxService, makeOutbox
from aetasip.records.quarterly import QuarterlyLogService
from aetasip.records.settings import recordServer
from aetasip.registrar import Registrar
from aetasip.routing import Directory
from aetasip.routing.chain import makeRoutingChain
from aetasip.sip.digest import DigestAuthenticator
from aetasip.sipservice import SIPService
from aetasip.store import StoreService
from aetasip.stun import STUNService
from aetasip.testline.service import LinesDirectory, TestLineService
from aetasip.testline.settings import lineSettings
from aetasip.web.api import AdminAPI
from aetasip.web.control import ControlApp, ControlSocketService
from aetasip.web.health import healthReport
from aetasip.web.metrics import CallCounters, RegistrationCounters, ServiceCollector, makeRegistry
from aetasip.web.portal import Portal
from aetasip.web.portalsettings import PortalSettings
from aetasip.web.service import AdminListenService, WebApp, WebService
from aetasip.web.settings import WebSettings
from aetasip.web.tokens import StoreTokens

log = Logger()


class Options(usage.Options):
    """
    C{twistd aetasip} options. Every value also has a configuration key;
    the command line wins over the file.
    """

    synopsis = "[--config FILE] [--listen ADDRESS]... [--domain NAME]... [--store URL]"
    longdesc = (
        "Runs the aetasip SIP service. With no option it runs on its embedded defaults: "
        "SIP on UDP and TCP ports 5060 and 5070 of every address, STUN on 3478, the store "
        "in ./aetasip.db. See tap-config.py for every configuration key."
    )
    optParameters = [
        ["config", "c", None, "Python configuration file (see tap-config.py)."],
        ["store", None, None, "Store URL (store.url): sqlite:///PATH or postgresql://…"],
        ["realm", None, None, "Digest realm (sip.realm)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.overrides: dict[str, Any] = {}
        self["listen"] = []
        self["domain"] = []
        self["sip-port"] = []

    def opt_listen(self, address: str) -> None:
        """Listen on this address (sip.listen); repeat for several."""
        self["listen"].append(address)

    def opt_domain(self, name: str) -> None:
        """Also answer for this domain name or address (sip.domains); repeat for several."""
        self["domain"].append(name)

    def opt_sip_port(self, port: str) -> None:
        """SIP port for UDP and TCP (sip.udp_ports and sip.tcp_ports); repeat for several."""
        try:
            self["sip-port"].append(int(port))
        except ValueError:
            raise usage.UsageError(f"--sip-port {port!r}: expected a port number") from None

    def postOptions(self) -> None:
        overrides: dict[str, Any] = {}
        if self["listen"]:
            overrides["sip.listen"] = self["listen"]
        if self["sip-port"]:
            overrides["sip.udp_ports"] = overrides["sip.tcp_ports"] = self["sip-port"]
        if self["store"] is not None:
            overrides["store.url"] = self["store"]
        if self["realm"] is not None:
            overrides["sip.realm"] = self["realm"]
        self.overrides = overrides

    def loadConfig(self) -> config.Config:
        """
        The configuration: defaults, then the file, then the command line.

        @raise config.ConfigError: for a bad file, key or value.
        """
        loaded = config.load(self["config"], {})
        overrides = dict(self.overrides)
        if self["domain"]:
            overrides["sip.domains"] = [*loaded["sip.domains"], *self["domain"]]
        return loaded.replace(**{k.replace(".", "__"): v for k, v in overrides.items()})


def dialogKey(cfg: config.Config, storeService: StoreService) -> bytes:
    """
    The key of the dialog tokens: C{calls.dialog_key}, else the store's
    secret, shared by every server on the same store.
    """
    configured = cfg["calls.dialog_key"]
    if configured is not None:
        return configured.encode()
    return storeService.store.store.secret("dialog-token")


def twistdLogObserver(options: Options | dict[str, Any]) -> Callable[[], ILogObserver] | None:
    """
    What makes twistd's log observer without Twisted's per-socket lines
    (L{aetasip.quietlog}), when C{options} were read by twistd and its
    command line names no C{--logger}; else C{None}.
    """
    serverOptions = getattr(options, "parent", None)
    if serverOptions is None or serverOptions.get("logger"):
        return None
    return partial(quietlog.twistdObserver, serverOptions)


def tuneGarbageCollector() -> None:
    """
    Keep the cyclic garbage collector off the request path: what exists
    once the service has started (modules, configuration, restored
    bindings) is frozen out of its scans, and young collections run every
    50,000 allocations rather than 700. Requests make almost no cycles;
    their objects are freed by reference counting.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _reactor(reactor: Any) -> Any:
    """C{reactor}, or the global one when it is C{None}."""
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor


class AetasipService(service.MultiService):
    """
    The top of the tree. It stops its services one after the other, in
    reverse order, each once the one after it has finished: the SIP
    service writes its last bindings before the store closes.
    """

    def __init__(self, logObserver: Callable[[], ILogObserver] | None = None) -> None:
        """
        @param logObserver: makes the observer twistd is to log through
            (L{aetasip.quietlog.twistdObserver}), or C{None} to leave
            twistd's log as it is.
        """
        super().__init__()
        self._logObserver = logObserver

    def setServiceParent(self, parent: Any) -> None:
        """
        Join C{parent}; when it is twistd's application and no log observer
        is set on it, set L{aetasip.quietlog}'s: twistd logs through the
        application's L{ILogObserver} component (as for a C{.tac} file).
        """
        if (
            self._logObserver is not None
            and isinstance(parent, Componentized)
            and parent.getComponent(ILogObserver) is None
        ):
            parent.setComponent(ILogObserver, self._logObserver())
        super().setServiceParent(parent)

    def startService(self) -> None:
        super().startService()
        tuneGarbageCollector()

    def stopService(self) -> Deferred[None]:
        service.Service.stopService(self)
        return ensureDeferred(self._stopInTurn())

    async def _stopInTurn(self) -> None:
        for child in reversed(list(self)):
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("Stopping {service} failed", service=child.name)


class BackendStopper(service.Service):
    """
    Stops, with the service, the authentication backends that hold
    resources of their own (the LDAP backend's threads and connections).
    It stands before the SIP service, so it stops after it.
    """

    name = "auth"

    def __init__(self, backend: Any) -> None:
        self.backends = list(getattr(backend, "backends", [backend]))

    def startService(self) -> None:
        super().startService()
        log.info("Authentication backends: {backends}", backends=", ".join(b.name for b in self.backends))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stops = [maybeDeferred(b.stop) for b in self.backends if callable(getattr(b, "stop", None))]
        return gatherResults(stops).addCallback(lambda _: log.info("Authentication stopped"))


def makeSIPService(
    cfg: config.Config,
    auth: Any,
    store: Any = None,
    reactor: Any = None,
    directory: Directory | None = None,
    observers: CallObservers | None = None,
    media: Any = None,
    dialogKey: bytes | None = None,
) -> SIPService:
    """
    The SIP element: transports and transaction layers (L{SIPService}),
    and the registrar, the shared authentication step and the proxy they
    feed, built here and attached to it.

    @param dialogKey: the key of the dialog tokens (see
        L{aetasip.calls.token}); default: C{calls.dialog_key}, else a
        random one (in-dialog requests then do not survive a restart).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    serverHeader = f"aetasip/{__version__}"
    domains = LocalDomains(cfg["sip.domains"], cfg["sip.listen"])
    digest = DigestAuthenticator(
        cfg["sip.realm"], cfg["auth.algorithms"], cfg["auth.nonce_lifetime"], now=reactor.seconds
    )
    limits = FailureLimits.fromConfig(cfg, reactor.seconds)
    authentication = Authentication(
        digest, auth, cfg["sip.realm"], serverHeader, md5OnlyAgents=cfg["auth.md5_only_agents"], limits=limits
    )
    location = LocationService(reactor, store)
    registrar = Registrar(cfg, location, authentication, domains, serverHeader)
    sip = SIPService(cfg, location, domains, serverHeader, reactor)
    if dialogKey is None:
        configured = cfg["calls.dialog_key"]
        dialogKey = configured.encode() if configured is not None else os.urandom(32)
    proxy = Proxy(
        reactor,
        authentication,
        location,
        domains,
        sip.clients,
        sip.hopTo,
        sip.hopToURI,
        sip.address,
        serverHeader,
        sip.isOurs,
        DialogSigner(dialogKey),
        makeRoutingChain(cfg),
        directory,
        cfg["routing.hunting_ring_time"],
        observers,
        MediaHook(media),
        callSettings(cfg),
    )
    flood = FloodControl.fromConfig(cfg, reactor.seconds)
    core = SIPCore(sip.transactions, registrar, domains, serverHeader, proxy, sip.clients, flood)
    sip.attach(core, registrar, proxy)
    return sip


def callParts(cfg: config.Config, store: Any) -> tuple[CallObservers, Any]:
    """
    The call observers and the media handler factory the configuration
    names (C{calls.observers}, C{calls.media_handler}).

    @raise config.ConfigError: for a name no plugin has.
    """
    factories = chosen("calls.observers", cfg["calls.observers"], namedPlugins(ICallObserverFactory, "call observers"))
    observers = CallObservers(factory.makeObserver(cfg, store) for factory in factories)
    mediaFactory = None
    if cfg["calls.media_handler"] is not None:
        (mediaFactory,) = chosen(
            "calls.media_handler", [cfg["calls.media_handler"]], namedPlugins(IMediaHandlerFactory, "media handlers")
        )
    return observers, mediaFactory


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


def makeService(options: Options | dict[str, Any], reactor: Any = None) -> service.MultiService:
    """
    Build the service tree from parsed L{Options} (or a dict with a
    C{"config"} entry holding a L{config.Config}, for tests).
    """
    if isinstance(options, Options):
        try:
            cfg = options.loadConfig()
        except config.ConfigError as e:
            # One line, no usage text and no traceback: twistd prints the message and exits 1.
            raise SystemExit(f"aetasip: {e}") from None
    else:
        cfg = options["config"]
    top = AetasipService(twistdLogObserver(options))
    top.setName("aetasip")

    storeService = StoreService(cfg["store.url"], reactor=reactor)
    try:
        # Open now: a database that is down or a schema too new stops the start
        # here, with one line, before twistd detaches (closed again below).
        storeService.store.store.open()
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SystemExit(f"aetasip: cannot open the store {storeService.store.store.describe()}: {reason}") from None
    storeService.setServiceParent(top)

    try:
        auth = makeAuthBackend(cfg, storeService.store)
    except config.ConfigError as e:
        raise SystemExit(f"aetasip: {e}") from None

    notifier = None
    if cfg["notify.urls"]:
        try:
            notifier = NotifierService(cfg, reactor=reactor)
        except config.ConfigError as e:
            raise SystemExit(f"aetasip: {e}") from None
        # Before SIP in the tree: started before it and stopped after it, no event is missed.
        notifier.setServiceParent(top)

    BackendStopper(auth).setServiceParent(top)

    storeDirectory = StoreDirectory(storeService.store, clock=reactor)
    storeDirectory.service().setServiceParent(top)
    directory: Directory = storeDirectory
    lines = None
    if cfg["testline.enabled"]:
        try:
            lines = lineSettings(cfg, f"aetasip/{__version__}")
        except config.ConfigError as e:
            raise SystemExit(f"aetasip: {e}") from None
        # The test lines are numbers routing knows, like accounts.
        directory = LinesDirectory(storeDirectory, list(lines.lines))

    outbox = makeOutbox(cfg, storeService.store, reactor)
    outboxService = OutboxService(outbox)
    outboxService.setServiceParent(top)
    quarterly = QuarterlyLogService(storeService.store, outbox, cfg["server.name"], outbox.clock)
    quarterly.setServiceParent(top)
    try:
        observers, mediaFactory = callParts(cfg, storeService.store)
        sip = makeSIPService(
            cfg, auth, storeService.store, reactor, directory, observers, dialogKey=dialogKey(cfg, storeService)
        )
        parts = list(observers.observers)
        if mediaFactory is not None:
            # The handler may end calls (a media timeout): it gets the calls' control.
            sip.proxy.media.handler = mediaFactory.makeHandler(cfg, CallControl(sip.proxy), directory)
            parts.append(sip.proxy.media.handler)
    except config.ConfigError as e:
        raise SystemExit(f"aetasip: {e}") from None
    sip.setServiceParent(top)
    if notifier is not None:
        sip.location.listeners.append(notifier)
    # Counted for /metrics: calls by end cause and relayed figures, registration events.
    callCounters, registrations = CallCounters(), RegistrationCounters()
    observers.add(callCounters)
    sip.location.listeners.append(registrations)
    # After SIP: stopped before it, so the calls end while their transports live.
    CallService(sip.proxy, parts).setServiceParent(top)
    clusterSettings = ClusterSettings.fromConfig(cfg)
    cluster = ClusterService(
        sip.location,
        storeService.store,
        cfg["store.url"],
        cfg["server.name"],
        clusterSettings.address,
        clusterSettings.checkInterval,
        clusterSettings.announceInterval,
        CallControl(sip.proxy),
        sip.pinger,
        [outboxService, quarterly],
        reactor,
        recordServer(cfg),
    )
    cluster.setServiceParent(top)
    if cluster.shared:
        # It tells the other servers when a call they set up ends here.
        observers.add(cluster)
    testLine = None
    if lines is not None:
        # After SIP: its sockets are bound when the lines' bindings name one; stopped
        # first, so the sessions' BYEs go out through a live proxy.
        testLine = TestLineService(reactor, sip, sip.location, lines, cfg["testline.media_address"])
        testLine.setServiceParent(top)

    stun = None
    if cfg["stun.enabled"]:
        try:
            stun = STUNService(cfg, reactor=reactor)
        except config.ConfigError as e:
            raise SystemExit(f"aetasip: {e}") from None
        stun.setServiceParent(top)
    operations = makeOperations(sip, testLine, reactor)
    reload = storeDirectory.load
    # The store's bearer tokens, read again at most every few seconds, for the API over TCP.
    storeTokens = StoreTokens(storeService.store, _reactor(reactor).seconds)
    if cfg["web.listen"] is not None:
        # Last: started once the rest runs, stopped first.
        makeWebService(
            cfg, top, sip, storeService.store, auth, stun, reactor, outbox, notifier, callCounters, registrations,
            operations, reload, storeTokens,
        ).setServiceParent(top)  # fmt: skip
    if cfg["web.control_socket"] is not None:
        makeControlService(cfg, top, sip, storeService.store, auth, reactor, operations, reload).setServiceParent(top)
    if cfg["web.admin_listen"] is not None:
        # Last: started once the rest runs, stopped first.
        makeAdminListenService(
            cfg, storeService.store, auth, reactor, operations, reload, storeTokens
        ).setServiceParent(top)  # fmt: skip
    # twistd forks after makeService unless -n: no database connection may
    # cross the fork. A SQLite connection's locks stay with the parent, which
    # exits: the next process to close the file then takes itself for the last
    # one and removes the WAL the daemon writes to, whose later writes are seen
    # by no other process and lost in a crash (a PostgreSQL connection must not
    # be shared with a child either). The store opened above is closed again;
    # StoreService opens it in the process that runs.
    storeService.store.store.close()
    return top
