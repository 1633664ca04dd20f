"""
The admin API's view of the running service, through L{Operations}:
registrations, calls in progress, relay and test-line sessions (list,
remove or release).
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from aetasip.operations import NodeUnavailable
from aetasip.store import checkNumber
from aetasip.web.apiframe import APIError, APIFrame, app, writeJSON


class RunningRoutes(APIFrame):
    """The admin API's routes of what the running service holds now."""

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
