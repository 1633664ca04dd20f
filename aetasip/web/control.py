"""
L{ControlSocketService}: the admin API on a UNIX socket
(C{web.control_socket}), for C{aetasip-admin}'s commands that act on the
running service (calls, relay and test-line sessions, registrations).

Requests on it need no bearer token: the socket is created mode 0600, so
only the service's user (and root) can connect, as with Kamailio's
C{kamcmd} control socket; the filesystem's permissions are the
authorization. A socket file left by a service that died is replaced at
start; one a running service still answers on stops the start (two
services must not share it); anything else at that path (a regular file)
is never removed. The socket is removed at stop.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

from klein import Klein
from twisted.application import service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from aetasip.web.api import AdminAPI
from aetasip.web.apiframe import writeJSON

log = Logger()


class SocketInUse(Exception):
    """The control socket's path is taken: by a running service, or by a file that is no socket."""


def claimSocketPath(path: str) -> None:
    """
    Make C{path} free for a new socket: remove a stale socket there (one
    nobody listens on any more).

    @raise SocketInUse: when a service answers on it, or the path is not a socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUse(f"{path} exists and is not a socket: not replaced")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketInUse(f"{path}: {e.strerror or e}") from None
    else:
        raise SocketInUse(f"another running service answers on {path}")
    finally:
        probe.close()
    log.info("Replacing the stale control socket {path}", path=path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise SocketInUse(f"cannot remove the stale socket {path}: {e.strerror or e}") from None


def listenControlSocket(reactor: Any, path: str, factory: Any) -> IListeningPort:
    """
    Listen at C{path}, readable and writable by its owner only from its
    first instant: bound under a umask that leaves the group and others
    nothing, and set to mode 0600 before it listens.

    @raise SocketInUse: see L{claimSocketPath}.
    @raise CannotListenError: when it cannot be bound (no such directory, no permission).
    """
    claimSocketPath(path)
    previous = os.umask(0o177)
    try:
        return reactor.listenUNIX(path, factory, mode=0o600)  # type: ignore[no-any-return]
    finally:
        os.umask(previous)


class ControlApp:
    """
    The routes served on the control socket: the admin API, and C{/health}.
    Also those of C{web.admin_listen} (L{aetasip.web.service.AdminListenService}),
    without C{/health}: the API alone.

    @ivar where: what serves it, for the log.
    """

    app = Klein()

    def __init__(self, api: AdminAPI, health: Any = None, where: str = "Control socket") -> None:
        self.api = api
        self.health = health
        self.where = where

    @app.route("/api/v1/", branch=True)
    def adminAPI(self, request: IRequest) -> IResource:
        return self.api.app.resource()

    @app.route("/health", methods=["GET"])
    async def healthReport(self, request: IRequest) -> bytes:
        if self.health is None:
            return writeJSON(request, 404, {"error": "no such resource"})
        status, body = await self.health()
        return writeJSON(request, status, body)

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Any) -> bytes:
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        if failure.check(NotFound):
            return writeJSON(request, 404, {"error": "no such resource"})
        if failure.check(MethodNotAllowed):
            return writeJSON(request, 405, {"error": f"method {request.method.decode()} not allowed here"})
        log.failure(
            "{where}: {method} {path} failed", failure, where=self.where, method=request.method, path=request.uri
        )
        return writeJSON(request, 500, {"error": "internal error; see the service's log"})


class ControlSocketService(service.Service):
    """
    Listens on the control socket while the service runs.

    @ivar path: the socket's path (C{web.control_socket}).
    @ivar port: the listening port while running.
    """

    name = "control"

    def __init__(self, path: str, app: ControlApp, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        from aetasip.web.service import QuietSite

        self.path = path
        self.app = app
        self.reactor = reactor
        self.site = QuietSite(app.app.resource())
        self.port: IListeningPort | None = None
        self._inode: tuple[int, int] | None = None

    def privilegedStartService(self) -> None:
        # Bound before twistd detaches: a path in use stops the start with one line.
        self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        self._listen()
        super().startService()
        log.info("Control socket on {path}", path=self.path)

    def _listen(self) -> None:
        if self.port is not None:
            return
        try:
            self.port = listenControlSocket(self.reactor, self.path, self.site)
        except SocketInUse as e:
            raise SystemExit(f"aetasip: web.control_socket {self.path!r}: {e}") from None
        except (CannotListenError, OSError) as e:
            if self.site.numPorts:
                self.site.doStop()  # started by the port before its bind failed
            error = e.socketError if isinstance(e, CannotListenError) else e
            reason = getattr(error, "strerror", None) or error
            raise SystemExit(f"aetasip: cannot create web.control_socket {self.path!r}: {reason}") from None
        status = os.stat(self.path)
        self._inode = (status.st_dev, status.st_ino)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        d: Deferred[None] = maybeDeferred(port.stopListening)  # type: ignore[call-overload]

        def stopped(_: object) -> None:
            self._remove()
            log.info("Control socket stopped")

        d.addCallback(stopped)
        return d

    def _remove(self) -> None:
        """Remove the socket file if it is still ours (not one a newer service made)."""
        try:
            status = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (status.st_dev, status.st_ino) == self._inode:
            try:
                os.unlink(self.path)
            except OSError as e:
                log.warn("Cannot remove the control socket {path}: {error}", path=self.path, error=e)
