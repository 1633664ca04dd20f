"""
What every route of the admin API (L{aetasip.web.api}) shares: the bearer
token check, the request's JSON body and query parameters read and
checked, the provisioning layer's errors turned into statuses, and JSON
answers and error pages (C{{"error": "..."}} with the status that says
what went wrong).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from klein import Klein
from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from aetasip.operations import Operations
from aetasip.store import (
    AccountExists,
    AsyncStore,
    GroupExists,
    GroupFull,
    GroupNotEmpty,
    InvalidValue,
    NoSuchAccount,
    NoSuchGroup,
    Provisioning,
    StoreError,
)
from aetasip.web.settings import tokenDigest
from aetasip.web.tokens import StoreTokens

log = Logger()

MAX_BODY = 64 * 1024
"""The largest request body the API reads, in bytes."""

_STATUS_OF_ERROR: tuple[tuple[type[StoreError], int], ...] = (
    (InvalidValue, 400),
    (NoSuchAccount, 404),
    (NoSuchGroup, 404),
    (AccountExists, 409),
    (GroupExists, 409),
    (GroupFull, 409),
    (GroupNotEmpty, 409),
)


class APIError(Exception):
    """
    What a route answers instead of its result: an HTTP status and a
    message for the C{error} member of the JSON body.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def pageLink(request: IRequest, offset: int) -> str:
    """
    The address of C{request} (its path as asked, under whatever prefix
    the API is served) with its query's C{offset} set to C{offset}.
    """
    parameters = [(name, values[0]) for name, values in request.args.items() if name != b"offset"]
    parameters.append((b"offset", str(offset).encode()))
    return request.path.decode("ascii", "replace") + "?" + urlencode(parameters)


def writeJSON(request: IRequest, status: int, body: object) -> bytes:
    """Set the status and headers of a JSON answer and return its bytes."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


app = Klein()
"""The admin API's routes: those of L{APIFrame} and of the classes that extend it."""


class APIFrame:
    """
    The frame of the admin API's routes (relative to C{/api/v1/}).

    @ivar store: the service's L{AsyncStore}.
    @ivar provisioning: the L{Provisioning} layer over its store.
    @ivar tokenDigests: digests of the accepted bearer tokens.
    @ivar forget: called with a number whose credentials or account
        changed, so the running service stops using what it cached.
    @ivar operations: the running service's calls, registrations, relay
        and test-line sessions, or C{None} (only provisioning then).
    @ivar reload: called once accounts or groups changed, so routing reads
        them now rather than at its next periodic load.
    @ivar storeTokens: the tokens kept in the store, or C{None} (only
        those of the configuration then).
    """

    # Klein binds its routes to each instance through this class attribute.
    app = app

    def __init__(
        self,
        store: AsyncStore,
        realm: str,
        tokenDigests: tuple[bytes, ...],
        forget: Callable[[str], None] = lambda number: None,
        operations: Operations | None = None,
        reload: Callable[[], Any] = lambda: None,
        storeTokens: StoreTokens | None = None,
    ) -> None:
        self.store = store
        self.storeTokens = storeTokens
        self.provisioning = Provisioning(store.store, realm)
        self.tokenDigests = tokenDigests
        self.forget = forget
        self.operations = operations
        self.reload = reload

    # -- the frame of every route

    async def authorize(self, request: IRequest) -> None:
        """
        @raise APIError: 401 unless the request carries an accepted bearer
            token, or came through the control socket.
        """
        if isinstance(request.getHost(), UNIXAddress):
            # The control socket (mode 0600): only the service's user and root can connect.
            return
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        accepted = False
        if scheme.lower() == b"bearer" and token.strip():
            digest = tokenDigest(token.strip().decode("utf-8", "replace"))
            # Every token compared, each in constant time: the time says nothing of which matched.
            for known in self.tokenDigests:
                accepted |= hmac.compare_digest(digest, known)
            if not accepted and self.storeTokens is not None:
                accepted = await self.storeTokens.find(digest) is not None
        if not accepted:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="aetasip"')
            raise APIError(401, "a valid bearer token is required (Authorization: Bearer TOKEN)")

    def body(self, request: IRequest) -> dict[str, Any]:
        """
        The JSON object sent as the request's body.

        @raise APIError: 413, 415 or 400 for a body too large, not JSON or not an object.
        """
        contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if contentType != b"application/json":
            raise APIError(415, "the body must be JSON (Content-Type: application/json)")
        assert request.content is not None
        data = request.content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise APIError(413, f"the body is larger than {MAX_BODY} bytes")
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise APIError(400, "the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise APIError(400, "the body must be a JSON object")
        return value

    async def provision(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """
        C{f(*args, **kwargs)} in the store's threads.

        @raise APIError: with the status of the L{StoreError} it raised.
        """
        try:
            return await self.store.run(f, *args, **kwargs)
        except StoreError as e:
            for kind, status in _STATUS_OF_ERROR:
                if isinstance(e, kind):
                    raise APIError(status, str(e)) from None
            raise APIError(409, str(e)) from None

    @staticmethod
    def fields(body: dict[str, Any], allowed: dict[str, tuple[type, ...]]) -> dict[str, Any]:
        """
        The members of C{body}, checked against C{allowed} (name: accepted types).

        @raise APIError: 400 for an unknown member or one of the wrong type.
        """
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise APIError(400, f"unknown member {unknown[0]!r}; expected some of: {', '.join(sorted(allowed))}")
        for name, value in body.items():
            if not isinstance(value, allowed[name]) or (isinstance(value, bool) and bool not in allowed[name]):
                raise APIError(400, f"member {name!r}: wrong type {type(value).__name__}")
        return body

    @staticmethod
    def parameters(request: IRequest, allowed: tuple[str, ...]) -> dict[str, str]:
        """
        The query parameters, each given at most once and named in C{allowed}.

        @raise APIError: 400 otherwise.
        """
        found = {}
        for rawName, values in request.args.items():
            name = rawName.decode("utf-8", "replace")
            if name not in allowed:
                expected = ", ".join(allowed) if allowed else "none"
                raise APIError(400, f"unknown parameter {name!r}; expected some of: {expected}")
            if len(values) != 1:
                raise APIError(400, f"parameter {name!r} given more than once")
            try:
                found[name] = values[0].decode("utf-8")
            except UnicodeDecodeError:
                raise APIError(400, f"parameter {name!r} is not UTF-8") from None
        return found

    @staticmethod
    def check(f: Callable[[Any], Any], value: Any) -> Any:
        """C{f(value)}, one of the store's rules; what it refuses is a 400."""
        try:
            return f(value)
        except InvalidValue as e:
            raise APIError(400, str(e)) from None

    def changed(self) -> None:
        """Accounts or groups changed: routing reads them now."""
        try:
            d = self.reload()
        except Exception:
            log.failure("Reloading the accounts and groups failed")
            return
        if hasattr(d, "addErrback"):
            d.addErrback(lambda f: log.failure("Reloading the accounts and groups failed", f))

    def running(self) -> Operations:
        """
        @raise APIError: 503 when the API was built without the running service's parts.
        """
        if self.operations is None:
            raise APIError(503, "the running service's calls and sessions are not available here")
        return self.operations

    @app.handle_errors(APIError)
    def apiError(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, APIError)
        return writeJSON(request, error.status, {"error": error.message})

    @app.handle_errors(NotFound)
    def notFound(self, request: IRequest, failure: Failure) -> bytes:
        return writeJSON(request, 404, {"error": "no such resource"})

    @app.handle_errors(MethodNotAllowed)
    def methodNotAllowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        request.setHeader(b"Allow", ", ".join(allowed).encode())
        return writeJSON(request, 405, {"error": f"method {request.method.decode()} not allowed here"})

    @app.handle_errors(Exception)
    def unexpected(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("Admin API: {method} {path} failed", failure, method=request.method, path=request.uri)
        return writeJSON(request, 500, {"error": "internal error; see the service's log"})
