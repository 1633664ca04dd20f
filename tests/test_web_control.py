"""
The control socket (C{web.control_socket}) and the admin API's routes for
groups, registrations, call records, calls, relay and test-line sessions,
over real HTTP on loopback TCP (bearer token) and on the UNIX socket (no
token: its mode is the authorization), in the real service tree.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import stat
from typing import Any
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from aetasip import config
from aetasip.location import Binding
from aetasip.store import Store
from aetasip.web.control import ControlApp, ControlSocketService, SocketInUse, claimSocketPath
from aetasip.web.openapi import openAPIDocument
from tests.servers import deferLater, freePortBlock, socketPath
from tests.test_records_store import answered, aRecord
from tests.test_web import AUTH, TOKEN, WebTestCase

HOUR = 3600.0
DAY = 1_790_000_000.0  # 2026-09-21


@implementer(IAgentEndpointFactory)
class _ToSocket:
    def __init__(self, path: str) -> None:
        self.path = path

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(reactor, self.path)


class ControlTestCase(WebTestCase):
    timeout = 60

    async def control(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """C{method} C{path} on the control socket, without a token: the status and the JSON answer."""
        client = HTTPClient(Agent.usingEndpointFactory(reactor, _ToSocket(self.server.controlSocket), pool=self.pool))
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        response = await client.request(method, "http://localhost" + path, data=data, headers=headers)
        content = await response.content()
        if response.headers.getRawHeaders("content-type") == ["text/csv; charset=utf-8"]:
            return response.code, content.decode()
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"], content)
        return response.code, json.loads(content)


class ControlSocketTests(ControlTestCase):
    async def test_socket_is_owner_only_and_needs_no_token(self) -> None:
        path = self.server.controlSocket
        mode = os.stat(path).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        code, body = await self.control("GET", "/api/v1/accounts")
        self.assertEqual((code, body), (200, {"accounts": []}))
        code, body = await self.control("GET", "/health")
        self.assertEqual((code, body["status"]), (200, "ok"))
        # The same route over TCP without a token: 401.
        code, body = await self.json("GET", "/api/v1/accounts")
        self.assertEqual(code, 401)

    async def test_removed_at_stop(self) -> None:
        path = self.server.controlSocket
        await self.server.stop()
        self.assertFalse(os.path.exists(path))

    async def test_a_running_service_keeps_its_socket(self) -> None:
        with self.assertRaises(SocketInUse) as raised:
            claimSocketPath(self.server.controlSocket)
        self.assertIn("another running service answers", str(raised.exception))
        second = ControlSocketService(self.server.controlSocket, ControlApp(self.web.app.api))
        with self.assertRaises(SystemExit) as exited:
            second.privilegedStartService()
        self.assertEqual(
            str(exited.exception),
            f"aetasip: web.control_socket {self.server.controlSocket!r}: another running service answers on "
            f"{self.server.controlSocket}",
        )
        # The first one still answers.
        code, _ = await self.control("GET", "/api/v1/calls")
        self.assertEqual(code, 200)


class StaleSocketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = socketPath(self.directory, "stale.sock")

    def test_stale_socket_is_replaced(self) -> None:
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(self.path)
        dead.close()  # the file stays; nobody listens
        claimSocketPath(self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_other_files_are_never_removed(self) -> None:
        with open(self.path, "w") as f:
            f.write("precious")
        with self.assertRaises(SocketInUse) as raised:
            claimSocketPath(self.path)
        self.assertIn("is not a socket", str(raised.exception))
        self.assertTrue(os.path.exists(self.path))

    def test_a_socket_that_cannot_be_made_stops_the_start_with_one_line(self) -> None:
        path = os.path.join(os.path.dirname(self.path), "missing", "x.sock")
        with self.assertRaises(SystemExit) as exited:
            ControlSocketService(path, ControlApp(None)).privilegedStartService()  # type: ignore[arg-type]
        self.assertEqual(
            str(exited.exception), f"aetasip: cannot create web.control_socket {path!r}: No such file or directory"
        )

    def test_setting(self) -> None:
        self.assertEqual(config.build({})["web.control_socket"], "aetasip.sock")
        self.assertIsNone(config.build({"web.control_socket": None})["web.control_socket"])
        for bad in ["", "/" + "x" * 107, 5, "dir/"]:
            with self.assertRaises(config.ConfigError) as raised:
                config.build({"web.control_socket": bad})
            self.assertIn("expected None or the path of a UNIX socket, at most 107 bytes", str(raised.exception))


class AuthorizationTests(ControlTestCase):
    async def test_every_route_needs_a_token_over_tcp_and_none_on_the_socket(self) -> None:
        routes = self.web.app.api.routes()
        for method, path in routes:
            if path == "/openapi.json":
                continue
            url = "/api/v1" + path.format(number="45675001", prefix="4567", callId="nothing@here")
            body = {} if method in ("POST", "PATCH") else None
            response = await self.request(method, url, body, {"Authorization": "Bearer " + "x" * 40})
            self.assertEqual(response.code, 401, (method, url))
            self.assertIn("bearer token", json.loads(await response.content())["error"])
            code, answer = await self.control(method, url, body)
            self.assertNotIn(code, (401, 403, 500), (method, url, answer))

    def test_openapi_references_resolve(self) -> None:
        document = openAPIDocument()
        text = json.dumps(document)
        schemas = document["components"]["schemas"]
        for reference in {r for r in text.split('"$ref": "')[1:]}:
            name = reference.split('"')[0].rsplit("/", 1)[-1]
            self.assertIn(name, schemas)


class GroupRouteTests(ControlTestCase):
    async def test_group_life(self) -> None:
        code, group = await self.json(
            "POST", "/api/v1/groups", {"prefix": "4567", "contact": "tech@studio.example", "incomingBlock": True}, AUTH
        )
        self.assertEqual(code, 201, group)
        self.assertEqual(
            (group["prefix"], group["contact"], group["incomingBlock"], group["hunting"], group["selfCare"]),
            ("4567", "tech@studio.example", True, False, True),
        )
        self.assertEqual(group["nextNumber"], "45675001")
        code, listed = await self.json("GET", "/api/v1/groups", headers=AUTH)
        self.assertEqual((code, [g["prefix"] for g in listed["groups"]]), (200, ["4567"]))

        code, allocated = await self.json("POST", "/api/v1/groups/4567/allocate", {"count": 2}, AUTH)
        self.assertEqual(code, 201, allocated)
        self.assertEqual([m["number"] for m in allocated["members"]], ["45675001", "45675002"])
        self.assertEqual(allocated["huntingSeries"], [])
        self.assertTrue(all(len(m["password"]) >= 12 for m in allocated["members"]))

        code, changed = await self.json("PATCH", "/api/v1/groups/4567", {"hunting": True, "relay": "always"}, AUTH)
        self.assertEqual(code, 200, changed)
        self.assertEqual((changed["group"]["hunting"], changed["group"]["relay"]), (True, "always"))
        self.assertEqual(changed["group"]["huntingNumber"], "45676000")
        self.assertEqual([c["number"] for c in changed["created"]], ["45676001", "45676002"])

        await self.json("POST", "/api/v1/accounts", {"number": "45675042"}, AUTH)
        code, member = await self.json("POST", "/api/v1/groups/4567/members", {"number": "45675042"}, AUTH)
        self.assertEqual((code, member["group"]), (200, "4567"))
        code, shown = await self.control("GET", "/api/v1/groups/4567")
        self.assertEqual(code, 200)
        self.assertEqual([m["number"] for m in shown["members"]], ["45675001", "45675002", "45675042"])
        # Attaching does not grow the hunting series (allocating does).
        self.assertEqual(shown["huntingSeries"], ["45676001", "45676002"])
        code, left = await self.json("DELETE", "/api/v1/groups/4567/members/45675042", headers=AUTH)
        self.assertEqual((code, left["group"]), (200, None))

        # Routing sees the new group at once (not at its next periodic load).
        directory = self.server.service.getServiceNamed("directory").directory
        for _ in range(50):
            if directory.group("4567") is not None and directory.group("4567").hunting:
                break
            await deferLater(0.05)
        self.assertTrue(directory.group("4567").hunting)

        code, refused = await self.json("DELETE", "/api/v1/groups/4567", headers=AUTH)
        self.assertEqual(code, 409, refused)
        for number in ["45675001", "45675002", "45676001", "45676002"]:
            await self.json("DELETE", f"/api/v1/accounts/{number}", headers=AUTH)
        code, deleted = await self.json("DELETE", "/api/v1/groups/4567", headers=AUTH)
        self.assertEqual((code, deleted), (200, {"prefix": "4567"}))
        code, gone = await self.json("GET", "/api/v1/groups/4567", headers=AUTH)
        self.assertEqual((code, gone), (404, {"error": "no group 4567"}))

    async def test_group_errors(self) -> None:
        await self.json("POST", "/api/v1/groups", {"prefix": "4567", "contact": "tech@studio.example"}, AUTH)
        cases: list[tuple[str, str, object, int, str]] = [
            ("POST", "/api/v1/groups", {"prefix": "4567", "contact": "a@b.example"}, 409, "4567"),
            ("POST", "/api/v1/groups", {"prefix": "45", "contact": "a@b.example"}, 400, "prefix"),
            ("POST", "/api/v1/groups", {"prefix": "4568"}, 400, "member 'contact' is required"),
            ("POST", "/api/v1/groups", {"prefix": "4568", "contact": "nobody"}, 400, "e-mail"),
            ("POST", "/api/v1/groups", {"prefix": "4568", "contact": "a@b.example", "hunting": "yes"}, 400,
             "member 'hunting': wrong type str"),
            ("POST", "/api/v1/groups", {"prefix": "4568", "contact": "a@b.example", "relay": "often"}, 400, "relay"),
            ("GET", "/api/v1/groups/45x7", None, 400, "prefix"),
            ("GET", "/api/v1/groups/9999", None, 404, "no group 9999"),
            ("PATCH", "/api/v1/groups/4567", {}, 400, "nothing to change"),
            ("PATCH", "/api/v1/groups/4567", {"colour": "red"}, 400, "unknown member 'colour'"),
            ("PATCH", "/api/v1/groups/9999", {"hunting": True}, 404, "9999"),
            ("POST", "/api/v1/groups/4567/allocate", {}, 400, "member 'count' is required"),
            ("POST", "/api/v1/groups/4567/allocate", {"count": "2"}, 400, "member 'count': wrong type str"),
            ("POST", "/api/v1/groups/4567/allocate", {"count": True}, 400, "wrong type bool"),
            ("POST", "/api/v1/groups/4567/allocate", {"count": 0}, 400, "count"),
            ("POST", "/api/v1/groups/4567/allocate", {"count": 1, "kind": "factory"}, 400, "kind"),
            ("POST", "/api/v1/groups/4567/allocate", {"count": 1000}, 400, "count"),
            ("POST", "/api/v1/groups/9999/allocate", {"count": 1}, 404, "9999"),
            ("POST", "/api/v1/groups/4567/members", {"number": "45675099"}, 404, "45675099"),
            ("DELETE", "/api/v1/groups/4567/members/45675099", None, 404, "45675099"),
        ]  # fmt: skip
        for method, path, body, status, message in cases:
            code, answer = await self.json(method, path, body, AUTH)
            self.assertEqual(code, status, (method, path, body, answer))
            self.assertIn(message, answer["error"], (method, path, body))
        for path in ("/api/v1/groups", "/api/v1/groups/4567/allocate", "/api/v1/groups/4567/members"):
            code, answer = await self.json("POST", path, b"{not json", AUTH)
            self.assertEqual((code, answer), (400, {"error": "the body is not valid JSON"}), path)
            code, answer = await self.control("POST", path, [1])
            self.assertEqual((code, answer), (400, {"error": "the body must be a JSON object"}), path)
        code, answer = await self.json("PATCH", "/api/v1/groups/4567", b"x=1",
                                       {**AUTH, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        self.assertEqual(code, 415, answer)
        # A group refused for its relay mode was not created half way.
        code, _ = await self.json("GET", "/api/v1/groups/4568", headers=AUTH)
        self.assertEqual(code, 404)


class LocationRouteTests(ControlTestCase):
    def bind(self, number: str, contact: str, expires: float = 300) -> Binding:
        now = reactor.seconds()  # type: ignore[attr-defined]
        binding = Binding(
            aor=number, contact=contact, expiresAt=now + expires, callID="c1", cseq=1, transport="udp",
            source=("127.0.0.1", 5070), local=("127.0.0.1", self.server.ports[0]), userAgent="Scoopy+ <b>",
            registeredAt=now,
        )  # fmt: skip
        self.server.sip.location.add(binding)
        return binding

    async def test_live_bindings_and_removal(self) -> None:
        self.bind("45675001", "sip:45675001@127.0.0.1:5070")
        self.bind("45675001", "sip:45675001@127.0.0.1:5072;transport=udp")
        self.bind("45675002", "sip:45675002@127.0.0.1:5074")
        code, listed = await self.json("GET", "/api/v1/locations", headers=AUTH)
        self.assertEqual(code, 200)
        self.assertEqual(len(listed["locations"]), 3)
        code, one = await self.control("GET", "/api/v1/locations?number=45675002")
        (binding,) = one["locations"]
        self.assertEqual(
            (binding["number"], binding["contact"], binding["source"], binding["transport"], binding["userAgent"]),
            ("45675002", "sip:45675002@127.0.0.1:5074", "127.0.0.1:5070", "udp", "Scoopy+ <b>"),
        )
        self.assertTrue(295 <= binding["expiresIn"] <= 300)
        contact = "sip:45675001@127.0.0.1:5072;transport=udp"
        code, removed = await self.control("DELETE", f"/api/v1/locations/45675001?contact={quote(contact, safe='')}")
        self.assertEqual((code, removed["removed"]["contact"]), (200, contact))
        self.assertEqual([b.contact for b in self.server.sip.location.lookup("45675001")],
                         ["sip:45675001@127.0.0.1:5070"])  # fmt: skip
        # The store forgets it too (written behind, within a second).
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        for _ in range(40):
            stored = [b.contact for b in store.bindingsFor("45675001", reactor.seconds())]  # type: ignore[attr-defined]
            if contact not in stored and stored:
                break
            await deferLater(0.1)
        self.assertEqual(stored, ["sip:45675001@127.0.0.1:5070"])

    async def test_errors(self) -> None:
        self.bind("45675001", "sip:45675001@127.0.0.1:5070")
        for path, status, message in [
            ("/api/v1/locations/45675001?contact=sip:other@127.0.0.1", 404, "no registration of 45675001"),
            ("/api/v1/locations/45675001", 400, "parameter 'contact' is required"),
            ("/api/v1/locations/4567x?contact=sip:x@y", 400, "invalid number"),
        ]:
            code, answer = await self.json("DELETE", path, headers=AUTH)
            self.assertEqual((code, message in answer["error"]), (status, True), (path, answer))
        code, answer = await self.json("GET", "/api/v1/locations?colour=red", headers=AUTH)
        self.assertEqual((code, "unknown parameter 'colour'" in answer["error"]), (400, True), answer)
        code, answer = await self.json("GET", "/api/v1/locations?number=1&number=2", headers=AUTH)
        self.assertEqual(code, 400, answer)


class RecordRouteTests(ControlTestCase):
    def setUp(self):  # type: ignore[no-untyped-def]
        d = super().setUp()

        def provision(_: object) -> None:
            store = Store(self.server.storeURL)
            store.open()
            store.addGroup("4567", "tech@example.net")
            store.allocate("4567", 2, realm="aetasip")
            store.writeCallRecords(
                [
                    answered("a", DAY, DAY + 2, DAY + HOUR, relayNode="local",
                             media={"caller": {"received": {"packets": 50, "lost": 1, "jitter": 2.0, "mos": 4.3}}}),
                    aRecord("b", DAY + 2 * HOUR, endedAt=DAY + 2 * HOUR + 1, status=486, endCause="rejected",
                            callee="45675002", resolved=("45675002",)),
                    answered("c", DAY + 3 * HOUR, DAY + 3 * HOUR + 1, DAY + 4 * HOUR, caller="33330001",
                             dialled="=cmd()", callee="33330002"),
                ],
                "main",
                DAY + 5 * HOUR,
            )  # fmt: skip
            store.close()

        return d.addCallback(provision)

    async def test_json_and_csv(self) -> None:
        code, found = await self.json("GET", "/api/v1/records", headers=AUTH)
        self.assertEqual(code, 200)
        self.assertEqual([r["id"] for r in found["records"]], ["a", "b", "c"])
        first = found["records"][0]
        self.assertEqual(
            (first["callId"], first["caller"], first["callee"], first["startedAt"], first["duration"]),
            ("call-a@codec", "45675001", "45675002", "2026-09-21T14:13:20Z", HOUR - 2),
        )
        self.assertEqual((first["relayNode"], first["media"]["caller"]["received"]["packets"]), ("local", 50))
        code, found = await self.control("GET", "/api/v1/records?group=4567&answeredOnly=true")
        self.assertEqual([r["id"] for r in found["records"]], ["a"])
        code, found = await self.json("GET", "/api/v1/records?number=33330001&limit=5", headers=AUTH)
        self.assertEqual([r["id"] for r in found["records"]], ["c"])
        code, found = await self.json(
            "GET", "/api/v1/records?from=2026-09-21T16:00:00Z&to=2026-09-21T18:00:00%2B01:00", headers=AUTH
        )
        self.assertEqual([r["id"] for r in found["records"]], ["b"])

        response = await self.request("GET", "/api/v1/records.csv?quarter=2026Q3", headers=AUTH)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        rows = list(csv.reader(io.StringIO((await response.content()).decode())))
        self.assertEqual(rows[0][:3], ["call_id", "caller", "caller_kind"])
        self.assertEqual([row[-1] for row in rows[1:]], ["a", "b", "c"])
        self.assertEqual(rows[3][6], "'=cmd()")  # a dialled "number" that is a formula stays text

    async def test_pages(self) -> None:
        code, found = await self.json("GET", "/api/v1/records", headers=AUTH)
        self.assertEqual((code, found["total"], found["offset"], found["limit"], found["next"]), (200, 3, 0, 100, None))
        response = await self.request("GET", "/api/v1/records?group=4567&limit=1", headers=AUTH)
        first = json.loads(await response.content())
        self.assertEqual([r["id"] for r in first["records"]], ["a"])
        self.assertEqual((first["total"], first["offset"], first["limit"]), (2, 0, 1))
        self.assertEqual(first["next"], "/api/v1/records?group=4567&limit=1&offset=1")
        self.assertEqual(
            response.headers.getRawHeaders("link"), ['</api/v1/records?group=4567&limit=1&offset=1>; rel="next"']
        )

        # A call made between two pages comes last: the next page holds no record twice, misses none.
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        store.writeCallRecords([aRecord("d", DAY + 6 * HOUR, endedAt=DAY + 6 * HOUR + 1)], "main", DAY + 7 * HOUR)
        seen = []
        following = "/api/v1/records?limit=2"
        while following is not None:
            code, page = await self.json("GET", following, headers=AUTH)
            self.assertEqual(code, 200, page)
            seen.extend(r["id"] for r in page["records"])
            following = page["next"]
            self.assertEqual(page["total"], 4)
        self.assertEqual(seen, ["a", "b", "c", "d"])

        code, past = await self.json("GET", "/api/v1/records?offset=10", headers=AUTH)
        self.assertEqual((code, past["records"], past["total"], past["next"]), (200, [], 4, None))
        code, _ = await self.json("GET", "/api/v1/records?limit=1000", headers=AUTH)
        self.assertEqual(code, 200)
        code, tooMany = await self.json("GET", "/api/v1/records?limit=1001", headers=AUTH)
        self.assertEqual((code, tooMany), (400, {"error": "invalid limit '1001': at most 1000 records a page"}))
        # The CSV export is every record, unless a limit is given; it pages the same way.
        code, text = await self.control("GET", "/api/v1/records.csv?offset=1&limit=2")
        self.assertEqual(code, 200)
        self.assertEqual([row[-1] for row in csv.reader(io.StringIO(text))][1:], ["b", "c"])
        code, text = await self.control("GET", "/api/v1/records.csv")
        self.assertEqual(len(list(csv.reader(io.StringIO(text)))), 5)

    async def test_bad_filters(self) -> None:
        for query, message in [
            ("number=1&group=4567", "not both"),
            ("quarter=2026Q5", "invalid quarter"),
            ("quarter=2026Q1&from=2026-01-01", "not both"),
            ("from=yesterday", "invalid time"),
            ("from=2026-04-01&to=2026-04-01", "before its end"),
            ("limit=0", "invalid limit"),
            ("limit=%C2%B2", "invalid limit"),
            ("offset=-1", "invalid offset"),
            ("offset=1.5", "invalid offset"),
            ("offset=1&offset=2", "more than once"),
            ("answeredOnly=maybe", "expected true or false"),
            ("group=45", "prefix"),
            ("sort=desc", "unknown parameter 'sort'"),
        ]:
            for path in ("/api/v1/records?", "/api/v1/records.csv?"):
                code, answer = await self.json("GET", path + query, headers=AUTH)
                self.assertEqual(code, 400, (query, answer))
                self.assertIn(message, answer["error"], query)


class RunningServiceRouteTests(ControlTestCase):
    async def test_no_calls_no_sessions(self) -> None:
        code, body = await self.control("GET", "/api/v1/calls")
        self.assertEqual((code, body), (200, {"calls": []}))
        code, body = await self.control("GET", "/api/v1/relay/sessions")
        self.assertEqual((code, body), (200, {"relay": False, "nodes": [], "sessions": []}))
        code, body = await self.control("GET", "/api/v1/testline/sessions")
        self.assertEqual((code, body), (200, {"running": True, "sessions": []}))
        code, body = await self.control("DELETE", "/api/v1/testline/sessions")
        self.assertEqual((code, body), (200, {"released": []}))
        callID = "a/b%c?d@host"
        for path, message in [
            ("/api/v1/calls/", "no call in progress with Call-ID a/b%c?d@host"),
            ("/api/v1/relay/sessions/", "no relay session with Call-ID a/b%c?d@host"),
            ("/api/v1/testline/sessions/", "no test-line session with Call-ID a/b%c?d@host"),
        ]:
            code, body = await self.control("DELETE", path + quote(callID, safe=""))
            self.assertEqual((code, body), (404, {"error": message}))

    async def test_token_still_works_over_tcp(self) -> None:
        code, body = await self.json("GET", "/api/v1/calls", headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual((code, body), (200, {"calls": []}))


class RelayRouteTests(ControlTestCase):
    settings = {
        "calls.media_handler": "relay",
        "relay.nodes": {"local": {"kind": "builtin", "address": "127.0.0.1", "ports": list(freePortBlock(20))}},
    }

    async def test_nodes_are_named(self) -> None:
        code, body = await self.control("GET", "/api/v1/relay/sessions")
        self.assertEqual((code, body), (200, {"relay": True, "nodes": ["local"], "sessions": []}))

    async def test_a_node_that_does_not_answer_is_a_503(self) -> None:
        from twisted.internet.defer import fail

        node = self.server.sip.proxy.media.handler.nodes["local"]
        self.patch(node, "sessions", lambda: fail(TimeoutError("no answer")))
        code, body = await self.control("GET", "/api/v1/relay/sessions")
        self.assertEqual((code, body), (503, {"error": "relay node local does not answer: no answer"}))
        code, body = await self.control("DELETE", "/api/v1/relay/sessions/x@y")
        self.assertEqual(code, 503)
        self.flushLoggedErrors(TimeoutError)
