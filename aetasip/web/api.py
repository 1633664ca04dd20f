"""
The admin API: JSON over HTTP(S), under C{/api/v1/}, for operators who
provision by program rather than with C{aetasip-admin}. Both call the same
L{Provisioning} layer, so the rules and errors are the same; what acts on
the running service (calls, registrations, relay and test-line sessions)
goes through L{Operations}, which C{aetasip-admin} reaches through this
API on the control socket (L{aetasip.web.control}).

Every route but the OpenAPI description asks for a bearer token over TCP:
one of C{web.admin_tokens}, compared by its SHA-256 digest, in constant
time, with every configured one; or one kept in the store (C{aetasip-admin
token add}), found by its digest (L{aetasip.web.tokens}). On the control socket (a
UNIX socket of mode 0600) no token is asked: whoever can open it is the
service's user or root. Errors are JSON C{{"error": "..."}} with the
status that says what went wrong: 400 for a bad value, 401 without a
valid token, 404 for no such account, group, call or route, 405, 409 when
the store refuses (a number taken), 413, 415.
"""

from __future__ import annotations

import datetime
import hmac
import io
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from klein import Klein
from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from aetasip.operations import NodeUnavailable, Operations, hostPort, isoTime
from aetasip.records.csvfiles import writeExport
from aetasip.records.query import MAX_RECORD_PAGE, RECORD_PAGE, InvalidQuery, recordQuery
from aetasip.records.record import CallRecord
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
    checkNumber,
)
from aetasip.store.models import Account, Group, checkPrefix
from aetasip.store.provisioning import NewPassword
from aetasip.web.openapi import openAPIDocument
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


GROUP_FLAGS = ("incomingBlock", "outgoingBlock", "hunting", "quarterlyLog", "selfCare")
"""The on/off options of a group, as the API and L{Provisioning} name them."""


def groupJSON(group: Group) -> dict[str, Any]:
    """What the API shows of a group."""
    shown: dict[str, Any] = {"prefix": group.prefix, "contact": group.contact}
    shown.update((flag, getattr(group, flag)) for flag in GROUP_FLAGS)
    shown.update(
        relay=group.relay,
        huntingNumber=group.huntingNumber if group.hunting else None,
        nextNumber=f"{group.prefix}{group.nextMember}",
        createdAt=_time(group.createdAt),
        updatedAt=_time(group.updatedAt),
    )
    return shown


def passwordsJSON(created: list[NewPassword]) -> list[dict[str, str]]:
    return [{"number": new.number, "password": new.password} for new in created]


def recordJSON(record: CallRecord) -> dict[str, Any]:
    """What the API shows of a call record (the fields of the CSV export, with the relay's statistics)."""
    return {
        "id": record.id,
        "server": record.server,
        "callId": record.callID,
        "caller": record.caller,
        "callerKind": record.callerKind,
        "domain": record.domain,
        "source": hostPort(record.source),
        "transport": record.transport,
        "dialled": record.dialled,
        "resolved": list(record.resolved),
        "callee": record.callee,
        "calleeAddress": hostPort(record.calleeSource),
        "calleeTransport": record.calleeTransport,
        "startedAt": isoTime(record.startedAt),
        "ringingAt": isoTime(record.ringingAt),
        "answeredAt": isoTime(record.answeredAt),
        "endedAt": isoTime(record.endedAt),
        "duration": round(record.duration, 3),
        "status": record.status,
        "endCause": record.endCause,
        "endDetail": record.endDetail,
        "recovered": record.recovered,
        "relayNode": record.relayNode,
        "media": record.media,
    }


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


class AdminAPI:
    """
    The routes of the admin API, relative to C{/api/v1/}.

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

    app = Klein()

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

    # -- the description

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return writeJSON(request, 200, openAPIDocument())

    # -- accounts

    @app.route("/accounts", methods=["GET"])
    async def listAccounts(self, request: IRequest) -> bytes:
        await self.authorize(request)
        kind = request.args.get(b"kind", [None])[0]
        accounts = await self.provision(self.store.store.listAccounts, None if kind is None else kind.decode())
        return writeJSON(request, 200, {"accounts": [accountJSON(a) for a in accounts]})

    @app.route("/accounts", methods=["POST"])
    async def createAccount(self, request: IRequest) -> bytes:
        await self.authorize(request)
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
        self.changed()
        request.setHeader(b"Location", f"/api/v1/accounts/{created.account.number}".encode())
        return writeJSON(request, 201, {"account": accountJSON(created.account), "password": created.password})

    async def _account(self, number: str) -> Account:
        account = await self.provision(self.store.store.getAccount, number)
        if account is None:
            raise APIError(404, f"no account {number}")
        return account  # type: ignore[no-any-return]

    @app.route("/accounts/<string:number>", methods=["GET"])
    async def getAccount(self, request: IRequest, number: str) -> bytes:
        await self.authorize(request)
        return writeJSON(request, 200, accountJSON(await self._account(number)))

    @app.route("/accounts/<string:number>", methods=["PATCH"])
    async def updateAccount(self, request: IRequest, number: str) -> bytes:
        await self.authorize(request)
        body = self.fields(
            self.body(request), {"displayName": (str,), "email": (str,), "kind": (str,), "relay": (str,)}
        )
        await self.provision(self.provisioning.updateAccount, number, **body)
        self.forget(number)
        self.changed()
        return writeJSON(request, 200, accountJSON(await self._account(number)))

    @app.route("/accounts/<string:number>", methods=["DELETE"])
    async def deleteAccount(self, request: IRequest, number: str) -> bytes:
        await self.authorize(request)
        registrations = await self.provision(self.provisioning.deleteAccount, number)
        self.forget(number)
        self.changed()
        return writeJSON(request, 200, {"number": number, "deletedRegistrations": registrations})

    @app.route("/accounts/<string:number>/password", methods=["POST"])
    async def setPassword(self, request: IRequest, number: str) -> bytes:
        await self.authorize(request)
        body = self.fields(self.body(request), {"password": (str,)})
        new = await self.provision(self.provisioning.setPassword, number, body.get("password"))
        self.forget(number)
        return writeJSON(request, 200, {"number": new.number, "password": new.password})

    @app.route("/accounts/<string:number>/portal-password", methods=["POST"])
    async def setPortalPassword(self, request: IRequest, number: str) -> bytes:
        await self.authorize(request)
        body = self.fields(self.body(request), {"password": (str,)})
        new = await self.provision(self.provisioning.newPortalPassword, number, body.get("password"))
        return writeJSON(request, 200, {"number": new.number, "password": new.password})

    @app.route("/accounts/<string:number>/portal-password", methods=["DELETE"])
    async def removePortalPassword(self, request: IRequest, number: str) -> bytes:
        await self.authorize(request)
        await self.provision(self.provisioning.setPortalPassword, number, None)
        return writeJSON(request, 200, accountJSON(await self._account(number)))

    # -- groups

    @app.route("/groups", methods=["GET"])
    async def listGroups(self, request: IRequest) -> bytes:
        await self.authorize(request)
        self.parameters(request, ())
        groups = await self.provision(self.store.store.listGroups)
        return writeJSON(request, 200, {"groups": [groupJSON(g) for g in groups]})

    @app.route("/groups", methods=["POST"])
    async def createGroup(self, request: IRequest) -> bytes:
        await self.authorize(request)
        allowed: dict[str, tuple[type, ...]] = {"prefix": (str,), "contact": (str,), "relay": (str,)}
        allowed.update((flag, (bool,)) for flag in GROUP_FLAGS)
        body = self.fields(self.body(request), allowed)
        for required in ("prefix", "contact"):
            if required not in body:
                raise APIError(400, f"member {required!r} is required")
        relay = body.pop("relay", None)
        group = await self.provision(self.provisioning.addGroup, **body)
        if relay is not None:
            try:
                await self.provision(self.provisioning.updateGroup, group.prefix, relay=relay)
            except APIError:
                # Created whole or not at all: a bad relay mode leaves no group behind.
                await self.provision(self.provisioning.deleteGroup, group.prefix)
                raise
            group = await self._group(group.prefix)
        self.changed()
        request.setHeader(b"Location", f"/api/v1/groups/{group.prefix}".encode())
        return writeJSON(request, 201, groupJSON(group))

    async def _group(self, prefix: str) -> Group:
        self.check(checkPrefix, prefix)
        group = await self.provision(self.store.store.getGroup, prefix)
        if group is None:
            raise APIError(404, f"no group {prefix}")
        return group  # type: ignore[no-any-return]

    @app.route("/groups/<string:prefix>", methods=["GET"])
    async def getGroup(self, request: IRequest, prefix: str) -> bytes:
        await self.authorize(request)
        group = await self._group(prefix)
        members = await self.provision(self.store.store.groupMembers, prefix)
        series = await self.provision(self.store.store.huntingSeries, prefix)
        shown = groupJSON(group)
        shown["members"] = [{"number": a.number, "kind": a.kind, "displayName": a.displayName} for a in members]
        shown["huntingSeries"] = [a.number for a in series]
        return writeJSON(request, 200, shown)

    @app.route("/groups/<string:prefix>", methods=["PATCH"])
    async def updateGroup(self, request: IRequest, prefix: str) -> bytes:
        await self.authorize(request)
        allowed: dict[str, tuple[type, ...]] = {"contact": (str,), "relay": (str,)}
        allowed.update((flag, (bool,)) for flag in GROUP_FLAGS)
        body = self.fields(self.body(request), allowed)
        if not body:
            raise APIError(400, f"nothing to change: give some of {', '.join(sorted(allowed))}")
        self.check(checkPrefix, prefix)
        created = await self.provision(self.provisioning.updateGroup, prefix, **body)
        self.changed()
        return writeJSON(
            request, 200, {"group": groupJSON(await self._group(prefix)), "created": passwordsJSON(created)}
        )

    @app.route("/groups/<string:prefix>", methods=["DELETE"])
    async def deleteGroup(self, request: IRequest, prefix: str) -> bytes:
        await self.authorize(request)
        self.check(checkPrefix, prefix)
        await self.provision(self.provisioning.deleteGroup, prefix)
        self.changed()
        return writeJSON(request, 200, {"prefix": prefix})

    @app.route("/groups/<string:prefix>/allocate", methods=["POST"])
    async def allocate(self, request: IRequest, prefix: str) -> bytes:
        await self.authorize(request)
        body = self.fields(self.body(request), {"count": (int,), "kind": (str,)})
        if "count" not in body:
            raise APIError(400, "member 'count' is required")
        self.check(checkPrefix, prefix)
        allocation = await self.provision(
            self.provisioning.allocate, prefix, body["count"], body.get("kind", "premium")
        )
        self.changed()
        return writeJSON(
            request,
            201,
            {"members": passwordsJSON(allocation.members), "huntingSeries": passwordsJSON(allocation.huntingSeries)},
        )

    @app.route("/groups/<string:prefix>/members", methods=["POST"])
    async def attach(self, request: IRequest, prefix: str) -> bytes:
        await self.authorize(request)
        body = self.fields(self.body(request), {"number": (str,)})
        if "number" not in body:
            raise APIError(400, "member 'number' is required")
        self.check(checkPrefix, prefix)
        await self.provision(self.provisioning.attach, body["number"], prefix)
        self.changed()
        return writeJSON(request, 200, accountJSON(await self._account(body["number"])))

    @app.route("/groups/<string:prefix>/members/<string:number>", methods=["DELETE"])
    async def detach(self, request: IRequest, prefix: str, number: str) -> bytes:
        await self.authorize(request)
        self.check(checkPrefix, prefix)
        account = await self._account(number)
        if account.group != prefix:
            raise APIError(404, f"account {number} is not a member of group {prefix}")
        await self.provision(self.provisioning.detach, number)
        self.changed()
        return writeJSON(request, 200, accountJSON(await self._account(number)))

    # -- registrations, live from the running service

    @app.route("/locations", methods=["GET"])
    async def listLocations(self, request: IRequest) -> bytes:
        await self.authorize(request)
        number = self.parameters(request, ("number",)).get("number")
        if number is not None:
            self.check(checkNumber, number)
        return writeJSON(request, 200, {"locations": self.running().bindings(number)})

    @app.route("/locations/<string:number>", methods=["DELETE"])
    async def removeLocation(self, request: IRequest, number: str) -> bytes:
        await self.authorize(request)
        contact = self.parameters(request, ("contact",)).get("contact")
        self.check(checkNumber, number)
        if not contact:
            raise APIError(400, "parameter 'contact' is required: the Contact URI of the registration to remove")
        removed = self.running().removeBinding(number, contact)
        if removed is None:
            raise APIError(404, f"no registration of {number} at {contact}")
        return writeJSON(request, 200, {"removed": removed})

    # -- call records

    RECORD_PARAMETERS = ("number", "group", "from", "to", "quarter", "answeredOnly", "limit", "offset")

    def _recordQuery(self, request: IRequest, pageSize: int | None = None) -> Any:
        """
        The call-record query of C{request}'s parameters; with C{pageSize},
        a page: C{limit} records at most (by default C{pageSize}, at most
        L{MAX_RECORD_PAGE}).
        """
        given = self.parameters(request, self.RECORD_PARAMETERS)
        if pageSize is not None:
            limit = given.setdefault("limit", str(pageSize))
            if limit.isascii() and limit.isdigit() and int(limit) > MAX_RECORD_PAGE:
                raise APIError(400, f"invalid limit {limit!r}: at most {MAX_RECORD_PAGE} records a page")
        answeredOnly = given.get("answeredOnly", "false").lower()
        if answeredOnly not in ("true", "false", "1", "0"):
            raise APIError(400, f"parameter 'answeredOnly': expected true or false, not {given['answeredOnly']!r}")
        try:
            return recordQuery(
                given.get("number"),
                given.get("group"),
                given.get("from"),
                given.get("to"),
                given.get("quarter"),
                answeredOnly in ("true", "1"),
                given.get("limit"),
                given.get("offset"),
            )
        except InvalidQuery as e:
            raise APIError(400, str(e)) from None

    @app.route("/records", methods=["GET"])
    async def records(self, request: IRequest) -> bytes:
        """
        A page of records, the oldest first (by start, then id: a stable
        order, new calls come last), with the total the filters select
        and the next page's address (also a C{Link: rel="next"} header).
        """
        await self.authorize(request)
        query = self._recordQuery(request, RECORD_PAGE)
        found, total = await self.provision(self.store.store.callRecordPage, query)
        following = None
        if query.offset + len(found) < total:
            following = pageLink(request, query.offset + len(found))
            request.setHeader(b"Link", f'<{following}>; rel="next"'.encode())
        return writeJSON(
            request,
            200,
            {
                "records": [recordJSON(r) for r in found],
                "total": total,
                "offset": query.offset,
                "limit": query.limit,
                "next": following,
            },
        )

    @app.route("/records.csv", methods=["GET"])
    async def recordsCSV(self, request: IRequest) -> bytes:
        await self.authorize(request)
        found = await self.provision(self.store.store.callRecords, self._recordQuery(request))
        out = io.StringIO()
        writeExport(out, found)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition", b'attachment; filename="call-records.csv"')
        request.setHeader(b"Cache-Control", b"no-store")
        return out.getvalue().encode("utf-8")

    # -- calls in progress

    @app.route("/calls", methods=["GET"])
    async def listCalls(self, request: IRequest) -> bytes:
        await self.authorize(request)
        self.parameters(request, ())
        return writeJSON(request, 200, {"calls": self.running().activeCalls()})

    @app.route("/calls/<path:callId>", methods=["DELETE"])
    async def releaseCall(self, request: IRequest, callId: str) -> bytes:
        await self.authorize(request)
        released = self.running().releaseCall(callId)
        if not released:
            raise APIError(404, f"no call in progress with Call-ID {callId}")
        return writeJSON(request, 200, {"released": released})

    # -- relay sessions

    @app.route("/relay/sessions", methods=["GET"])
    async def relaySessions(self, request: IRequest) -> bytes:
        await self.authorize(request)
        self.parameters(request, ())
        operations = self.running()
        try:
            sessions = await operations.relaySessions()
        except NodeUnavailable as e:
            raise APIError(503, str(e)) from None
        nodes = sorted(operations.relayNodes or {})
        return writeJSON(request, 200, {"relay": operations.relaying, "nodes": nodes, "sessions": sessions})

    @app.route("/relay/sessions/<path:callId>", methods=["DELETE"])
    async def releaseRelaySession(self, request: IRequest, callId: str) -> bytes:
        await self.authorize(request)
        try:
            released = await self.running().releaseRelay(callId)
        except NodeUnavailable as e:
            raise APIError(503, str(e)) from None
        if not released:
            raise APIError(404, f"no relay session with Call-ID {callId}")
        return writeJSON(request, 200, {"released": released})

    # -- test-line sessions

    @app.route("/testline/sessions", methods=["GET"])
    async def testLineSessions(self, request: IRequest) -> bytes:
        await self.authorize(request)
        self.parameters(request, ())
        operations = self.running()
        return writeJSON(
            request, 200, {"running": operations.testLineRunning, "sessions": operations.testLineSessions()}
        )

    @app.route("/testline/sessions", methods=["DELETE"])
    async def releaseTestLineSessions(self, request: IRequest) -> bytes:
        await self.authorize(request)
        self.parameters(request, ())
        return writeJSON(request, 200, {"released": self.running().releaseTestLine()})

    @app.route("/testline/sessions/<path:callId>", methods=["DELETE"])
    async def releaseTestLineSession(self, request: IRequest, callId: str) -> bytes:
        await self.authorize(request)
        released = self.running().releaseTestLine(callId)
        if not released:
            raise APIError(404, f"no test-line session with Call-ID {callId}")
        return writeJSON(request, 200, {"released": released})

    def routes(self) -> list[tuple[str, str]]:
        """Every route as C{(method, path)} with OpenAPI's C{{name}} placeholders."""
        found = []
        for rule in self.app.url_map.iter_rules():
            path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule.rule)
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    found.append((method, path))
        return sorted(found)
