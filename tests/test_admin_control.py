"""
C{aetasip-admin}'s commands on the running service (C{call}, C{relay},
C{testline}, C{location remove}), through its control socket: the
service runs in this process, the command in a thread (it blocks on the
socket while the reactor answers), as an operator runs it from a shell.
"""

from __future__ import annotations

import json
import os
from io import StringIO
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from aetasip import admin
from aetasip.location import Binding
from aetasip.store import Store
from tests.servers import RunningService, socketPath


class ControlCommandTests(TestCase):
    timeout = 60
    settings: dict[str, Any] = {}

    def setUp(self):  # type: ignore[no-untyped-def]
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.server = RunningService(self.directory, **self.settings)
        self.addCleanup(lambda: self.server.stop() if self.server.service is not None else None)
        return self.server.start()

    async def admin(self, *args: str, socket: bool = True) -> tuple[int, str, str]:
        """Run C{aetasip-admin [--socket PATH] ARGS} in a thread: the status, standard output and error."""
        out, err = StringIO(), StringIO()
        argv = ["--store", self.server.storeURL, *(["--socket", self.server.controlSocket] if socket else []), *args]
        code = await deferToThread(admin.main, argv, out, err)
        return code, out.getvalue(), err.getvalue()

    def configFile(self, text: str) -> str:
        path = os.path.join(self.directory, "aetasip.conf.py")
        with open(path, "w") as f:
            f.write(text)
        return path

    async def test_nothing_in_progress(self) -> None:
        self.assertEqual(await self.admin("call", "list"), (0, "No calls in progress.\n", ""))
        self.assertEqual(await self.admin("testline", "status"), (0, "No test-line sessions.\n", ""))
        self.assertEqual(
            await self.admin("relay", "show"), (0, "The relay is off: calls.media_handler is not 'relay'.\n", "")
        )
        for command in (["call", "list"], ["testline", "status"], ["relay", "show"]):
            code, out, err = await self.admin(*command, "--json")
            self.assertEqual((code, json.loads(out), err), (0, [], ""))
        self.assertEqual(await self.admin("testline", "release", "--all"), (0, "No test-line sessions.\n", ""))

    async def test_socket_from_the_configuration_file(self) -> None:
        path = self.configFile(f"web = {{'control_socket': {self.server.controlSocket!r}}}\n")
        self.assertEqual(
            await self.admin("--config", path, "call", "list", socket=False), (0, "No calls in progress.\n", "")
        )

    async def test_service_not_running(self) -> None:
        missing = socketPath(self.directory, "none.sock")
        code, out, err = await self.admin("--socket", missing, "call", "list", socket=False)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(
            err,
            "aetasip-admin: the service is not running or web.control_socket is off: "
            f"cannot connect to {missing}: No such file or directory\n",
        )
        path = self.configFile("web = {'control_socket': None}\n")
        code, out, err = await self.admin("--config", path, "testline", "status", socket=False)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(
            err,
            "aetasip-admin: the service is not running or web.control_socket is off: web.control_socket is None "
            "in the configuration; give --socket PATH\n",
        )
        # A file that is no socket of the service.
        with open(missing, "w") as f:
            f.write("x")
        code, _, err = await self.admin("--socket", missing, "relay", "show", socket=False)
        self.assertEqual(code, 1)
        self.assertIn("cannot connect to", err)
        self.assertNotIn("Traceback", err)

    async def test_refusals_are_one_line(self) -> None:
        for args, message in [
            (["call", "release", "nothing@here"], "no call in progress with Call-ID nothing@here"),
            (["relay", "release", "a/b@c"], "no relay session with Call-ID a/b@c"),
            (["testline", "release", "x%2F@y"], "no test-line session with Call-ID x%2F@y"),
            (["location", "remove", "45675001", "sip:45675001@127.0.0.1"],
             "no registration of 45675001 at sip:45675001@127.0.0.1"),
        ]:  # fmt: skip
            self.assertEqual(await self.admin(*args), (1, "", f"aetasip-admin: {message}\n"), args)

    async def test_location_show_is_live(self) -> None:
        """
        C{location show} shows the running service's registrations, not the
        store's copy: one it holds but has not saved yet is there, one only
        the store holds (stale) is not.
        """
        now = reactor.seconds()  # type: ignore[attr-defined]
        store = Store(self.server.storeURL)
        store.open()
        self.addCleanup(store.close)
        stale = Binding("45675009", "sip:45675009@127.0.0.1:5090", now + 600, "c9", 1, "udp", ("127.0.0.1", 5090),
                        ("127.0.0.1", 5060))  # fmt: skip
        store.saveBindings([stale])
        live = Binding("45675001", "sip:45675001@127.0.0.1:5070;transport=tcp", now + 300, "c1", 1, "tcp",
                       ("127.0.0.1", 40000), ("127.0.0.1", 5060), userAgent="AETA Scoopy+ 5.04")  # fmt: skip
        self.server.sip.location.add(live)
        code, out, err = await self.admin("location", "show")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["NUMBER", "CONTACT", "SOURCE", "USER", "AGENT", "EXPIRES"])
        self.assertEqual(len(lines), 2, out)
        self.assertEqual(
            lines[1].split()[:6],
            ["45675001", "sip:45675001@127.0.0.1:5070;transport=tcp", "127.0.0.1:40000/tcp", "AETA", "Scoopy+", "5.04"],
        )
        self.assertRegex(lines[1], r"in (299|300) s$")
        self.assertEqual(await self.admin("location", "show", "45675009"), (0, "No registrations for 45675009.\n", ""))
        code, out, err = await self.admin("location", "show", "45675001")
        self.assertEqual((code, err, len(out.splitlines())), (0, "", 2))

        # Stopped: the store's copy, said to be one.
        await self.server.stop()
        code, out, err = await self.admin("location", "show", "45675009")
        self.assertEqual(code, 0)
        self.assertIn("45675009", out)
        self.assertIn("the service is not running", err)
        self.assertIn("showing the registrations the service last saved in the store", err)

    async def test_location_remove(self) -> None:
        now = reactor.seconds()  # type: ignore[attr-defined]
        contact = "sip:45675001@127.0.0.1:5070;transport=udp"
        binding = Binding("45675001", contact, now + 300, "c1", 1, "udp", ("127.0.0.1", 5070), ("127.0.0.1", 5060))
        self.server.sip.location.add(binding)
        code, out, err = await self.admin("location", "remove", "45675001", contact)
        self.assertEqual((code, out, err), (0, f"Removed the registration of 45675001 at {contact}.\n", ""))
        self.assertEqual(self.server.sip.location.lookup("45675001"), [])


class UsageTests(SynchronousTestCase):
    """Bad input is a usage error (exit 2), before anything is reached."""

    def test_usage_errors(self) -> None:
        for args, message in [
            (["call"], "missing command: list, release"),
            (["call", "release"], "missing CALL-ID"),
            (["call", "release", "a b"], "invalid CALL-ID 'a b'"),
            (["call", "release", ""], "invalid CALL-ID ''"),
            (["call", "release", "a\x07b"], "invalid CALL-ID"),
            (["call", "list", "extra"], "Wrong number of arguments"),
            (["relay", "show", "a", "b"], "unexpected argument 'b'"),
            (["testline", "release"], "give --all or a CALL-ID"),
            (["testline", "release", "--all", "x@y"], "give --all or a CALL-ID"),
            (["testline", "status", "--csv"], "option --csv not recognized"),
            (["location", "remove", "45675001"], "missing CONTACT"),
            (["location", "remove", "45x", "sip:x@y"], "invalid number '45x'"),
            (["location", "remove", "45675001", " "], "invalid CONTACT"),
        ]:
            out, err = StringIO(), StringIO()
            code = admin.main(["--socket", "/nonexistent.sock", *args], out, err)
            self.assertEqual((code, out.getvalue()), (2, ""), args)
            self.assertIn(message, err.getvalue(), args)
            self.assertEqual(err.getvalue().count("\n"), 1, err.getvalue())
