"""
L{ControlClient}: the admin API of the running service through its
control socket (C{web.control_socket}, L{aetasip.web.control}), for
C{aetasip-admin}. Plain synchronous HTTP/1.1 (C{http.client}) over a UNIX
socket: a command makes one or two requests and exits.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlencode

NOT_RUNNING = "the service is not running or web.control_socket is off"


class ServiceUnreachable(Exception):
    """The control socket cannot be reached; the message says why and where."""


class ServiceNotRunning(ServiceUnreachable):
    """Nothing listens on the control socket (no such file, or connection refused): the service is not running."""


class ServiceRefused(Exception):
    """
    The service answered with an error (no such call, a bad value).

    @ivar status: the HTTP status.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _UNIXConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socketPath = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socketPath)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def segment(value: str) -> str:
    """C{value} as one path segment (a Call-ID may hold C{/}, C{?}, C{%}…)."""
    return quote(value, safe="@")


class ControlClient:
    """
    @ivar path: the control socket's path.
    @ivar timeout: seconds to wait for the service.
    """

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, method: str, path: str, query: dict[str, str] | None = None) -> Any:
        """
        C{method} C{/api/v1/PATH}: the JSON body of the answer.

        @raise ServiceUnreachable: when the socket cannot be reached or the service does not answer.
        @raise ServiceRefused: for an answer with an error status.
        """
        url = "/api/v1/" + path.lstrip("/")
        if query:
            url += "?" + urlencode(query)
        connection = _UNIXConnection(self.path, self.timeout)
        try:
            try:
                connection.request(method, url, headers={"Accept": "application/json"})
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise ServiceNotRunning(f"{NOT_RUNNING}: cannot connect to {self.path}: {e.strerror}") from None
            except PermissionError as e:
                raise ServiceUnreachable(
                    f"cannot connect to the control socket {self.path}: {e.strerror} (run as the service's user)"
                ) from None
            except OSError as e:
                raise ServiceUnreachable(f"{NOT_RUNNING}: cannot connect to {self.path}: {e.strerror or e}") from None
            try:
                response = connection.getresponse()
                data = response.read()
            except TimeoutError:
                raise ServiceUnreachable(
                    f"the service did not answer on {self.path} within {self.timeout:g} s"
                ) from None
            except (OSError, http.client.HTTPException) as e:
                raise ServiceUnreachable(f"the service closed {self.path} without an answer: {e}") from None
        finally:
            connection.close()
        try:
            body = json.loads(data)
        except ValueError:
            raise ServiceUnreachable(f"{self.path} answered {response.status} without JSON: is it aetasip's?") from None
        if response.status >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise ServiceRefused(response.status, str(message or f"HTTP status {response.status}"))
        return body
