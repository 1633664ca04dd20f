"""
C{twistd aetasip}: the service tree, built from the command-line options
(L{aetasip.options}) with the SIP element (L{aetasip.sipelement}) and the
web-facing services (L{aetasip.webservices}).

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
import signal
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, maybeDeferred
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from aetasip import __version__, config, quietlog
from aetasip.auth.chain import makeAuthBackend
from aetasip.calls.control import CallControl
from aetasip.calls.service import CallService
from aetasip.cluster.service import ClusterService
from aetasip.cluster.settings import ClusterSettings
from aetasip.directory import StoreDirectory
from aetasip.notify import NotifierService
from aetasip.options import Options
from aetasip.records.outbox import OutboxService, makeOutbox
from aetasip.records.quarterly import QuarterlyLogService
from aetasip.records.settings import recordServer
from aetasip.routing import Directory
from aetasip.sipelement import callParts, dialogKey, makeSIPService
from aetasip.store import StoreService
from aetasip.stun import STUNService
from aetasip.testline.service import LinesDirectory, TestLineService
from aetasip.testline.settings import lineSettings
from aetasip.web.metrics import CallCounters, RegistrationCounters
from aetasip.web.tokens import StoreTokens
from aetasip.webservices import makeAdminListenService, makeControlService, makeOperations, makeWebService

log = Logger()


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


def _quietRepeatedSignals() -> None:
    """
    Once the service is stopping, a SIGTERM or SIGINT more is only logged.
    Twisted's handlers would call C{reactor.stop()} again, which raises
    C{ReactorNotRunning}, logged with its traceback (Twisted issues 4406
    and 6600); C{timeout} sends two (to the process and to its group), and
    an operator may send a second while the last bindings are written.
    Run by twistd's reactor before it shuts down (see L{makeService}).
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works in the main thread only
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _alreadyStopping)


def _alreadyStopping(number: int, frame: FrameType | None) -> None:
    log.info("Received {signal} while stopping; the shutdown goes on", signal=signal.Signals(number).name)


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
    if isinstance(options, Options):
        # Run by twistd (a test's dict has no reactor shutdown to quieten).
        _reactor(reactor).addSystemEventTrigger("before", "shutdown", _quietRepeatedSignals)
    return top
