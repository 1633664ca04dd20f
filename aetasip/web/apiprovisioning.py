"""
The admin API's accounts and groups: create, read, change, delete, set
passwords, allocate numbers and members, through the same L{Provisioning}
layer as C{aetasip-admin}.
"""

from __future__ import annotations

import datetime
from typing import Any

from twisted.web.iweb import IRequest

from aetasip.store.models import Account, Group, checkPrefix
from aetasip.store.provisioning import NewPassword
from aetasip.web.apiframe import APIError, APIFrame, app, writeJSON


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


class ProvisioningRoutes(APIFrame):
    """The admin API's routes of the accounts and groups in the store."""

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
