"""
The admin API: JSON over HTTP(S), under C{/api/v1/}, for operators who
provision by program rather than with C{aetasip-admin}. Both call the same
L{Provisioning} layer, so the rules and errors are the same.

Every route but the OpenAPI description asks for a bearer token of
C{web.admin_tokens}; the token is compared by its SHA-256 digest, in
constant time, with every configured one. Errors are JSON
C{{"error": "..."}} with the status that says what went wrong: 400 for a
bad value, 401 without a valid token, 404 for no such account or route,
405, 409 when the store refuses (a number taken), 413, 415.
"""

from __future__ import annotations

import datetime
import hmac
import json
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

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
from aetasip.store.models import Account
from aetasip.web.openapi import openAPIDocument
from aetasip.web.settings import tokenDigest

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


def _time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def accountJSON(account: Account) -> dict[str, Any]:
    """
    What the API shows of an account: never its digests or portal
    password hash, only whether it has a portal password.
    """
    return {
        "number": account.number,
        "kind": account.kind,
        "displayName": account.displayName,
        "email": account.email,
        "group": account.group,
        "relay": account.relay,
        "portalPassword": account.portalPasswordHash is not None,
        "createdAt": _time(account.createdAt),
        "updatedAt": _time(account.updatedAt),
    }


def writeJSON(request: IRequest, status: int, body: object) -> bytes:
    """Set the status and headers of a JSON answer and return its bytes."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


class AdminAPI:
    """
    The routes of the admin API, relative to C{/api/v1/}.

    @ivar store: the service's L{AsyncStore}.
    @ivar provisioning: the L{Provisioning} layer over its store.
    @ivar tokenDigests: digests of the accepted bearer tokens.
    @ivar forget: called with a number whose credentials or account
        changed, so the running service stops using what it cached.
    """

    app = Klein()

    def __init__(
        self,
        store: AsyncStore,
        realm: str,
        tokenDigests: tuple[bytes, ...],
        forget: Callable[[str], None] = lambda number: None,
    ) -> None:
        self.store = store
        self.provisioning = Provisioning(store.store, realm)
        self.tokenDigests = tokenDigests
        self.forget = forget

    # -- the frame of every route

    def authorize(self, request: IRequest) -> None:
        """
        @raise APIError: 401 unless the request carries an accepted bearer token.
        """
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        accepted = False
        if scheme.lower() == b"bearer" and token.strip():
            digest = tokenDigest(token.strip().decode("utf-8", "replace"))
            # Every token compared, each in constant time: the time says nothing of which matched.
            for known in self.tokenDigests:
                accepted |= hmac.compare_digest(digest, known)
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

    # -- the description

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return writeJSON(request, 200, openAPIDocument())

    # -- accounts

    @app.route("/accounts", methods=["GET"])
    async def listAccounts(self, request: IRequest) -> bytes:
        self.authorize(request)
        kind = request.args.get(b"kind", [None])[0]
        accounts = await self.provision(self.store.store.listAccounts, None if kind is None else kind.decode())
        return writeJSON(request, 200, {"accounts": [accountJSON(a) for a in accounts]})

    @app.route("/accounts", methods=["POST"])
    async def createAccount(self, request: IRequest) -> bytes:
        self.authorize(request)
        body = self.fields(
            self.body(request),
            {
                "number": (str,), "kind": (str,), "password": (str,), "displayName": (str,),
                "email": (str,), "group": (str,), "portalPassword": (str,),
            },
        )  # fmt: skip
        if "number" not in body:
            raise APIError(400, "member 'number' is required")
        created = await self.provision(
            self.provisioning.addAccount,
            body["number"],
            kind=body.get("kind", "premium"),
            password=body.get("password"),
            displayName=body.get("displayName", ""),
            email=body.get("email", ""),
            portalPassword=body.get("portalPassword"),
            group=body.get("group"),
        )
        self.forget(created.account.number)
        request.setHeader(b"Location", f"/api/v1/accounts/{created.account.number}".encode())
        return writeJSON(request, 201, {"account": accountJSON(created.account), "password": created.password})

    async def _account(self, number: str) -> Account:
        account = await self.provision(self.store.store.getAccount, number)
        if account is None:
            raise APIError(404, f"no account {number}")
        return account  # type: ignore[no-any-return]

    @app.route("/accounts/<string:number>", methods=["GET"])
    async def getAccount(self, request: IRequest, number: str) -> bytes:
        self.authorize(request)
        return writeJSON(request, 200, accountJSON(await self._account(number)))

    @app.route("/accounts/<string:number>", methods=["PATCH"])
    async def updateAccount(self, request: IRequest, number: str) -> bytes:
        self.authorize(request)
        body = self.fields(
            self.body(request), {"displayName": (str,), "email": (str,), "kind": (str,), "relay": (str,)}
        )
        await self.provision(self.provisioning.updateAccount, number, **body)
        self.forget(number)
        return writeJSON(request, 200, accountJSON(await self._account(number)))

    @app.route("/accounts/<string:number>", methods=["DELETE"])
    async def deleteAccount(self, request: IRequest, number: str) -> bytes:
        self.authorize(request)
        registrations = await self.provision(self.provisioning.deleteAccount, number)
        self.forget(number)
        return writeJSON(request, 200, {"number": number, "deletedRegistrations": registrations})

    @app.route("/accounts/<string:number>/password", methods=["POST"])
    async def setPassword(self, request: IRequest, number: str) -> bytes:
        self.authorize(request)
        body = self.fields(self.body(request), {"password": (str,)})
        new = await self.provision(self.provisioning.setPassword, number, body.get("password"))
        self.forget(number)
        return writeJSON(request, 200, {"number": new.number, "password": new.password})

    @app.route("/accounts/<string:number>/portal-password", methods=["POST"])
    async def setPortalPassword(self, request: IRequest, number: str) -> bytes:
        self.authorize(request)
        body = self.fields(self.body(request), {"password": (str,)})
        new = await self.provision(self.provisioning.newPortalPassword, number, body.get("password"))
        return writeJSON(request, 200, {"number": new.number, "password": new.password})

    @app.route("/accounts/<string:number>/portal-password", methods=["DELETE"])
    async def removePortalPassword(self, request: IRequest, number: str) -> bytes:
        self.authorize(request)
        await self.provision(self.provisioning.setPortalPassword, number, None)
        return writeJSON(request, 200, accountJSON(await self._account(number)))

    def routes(self) -> list[tuple[str, str]]:
        """Every route as C{(method, path)} with OpenAPI's C{{name}} placeholders."""
        found = []
        for rule in self.app.url_map.iter_rules():
            path = rule.rule.replace("<string:", "{").replace(">", "}")
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    found.append((method, path))
        return sorted(found)
