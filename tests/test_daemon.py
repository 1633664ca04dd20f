"""
C{twistd aetasip} as a daemon (no C{-n}), as an operator runs it with its
store, SQLite or PostgreSQL: twistd forks after building the service
tree. The store opened to check it before the fork must not be carried
across it: with SQLite, the daemon's writes made after another process
(aetasip-admin, this test) closed the file went to a WAL file that
process had removed, seen by nobody else and lost in a crash; a
PostgreSQL connection must not be shared with the child either.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from io import StringIO

import sqlalchemy as sa
from twisted.trial.unittest import TestCase

from aetasip import admin
from aetasip.store import Store
from aetasip.store.engine import describeURL
from tests.postgres import postgresqlURL
from tests.servers import deferLater, freePort, requireTool, run, socketPath, twistdArguments, twistdConfig
from tests.sipp import Sipp
from tests.test_log_noise import PORT_NOISE, TWISTED_NOISE


class DaemonTests(TestCase):
    """
    The daemon on the store of L{storeURLFor} (here a SQLite file),
    provisioned by aetasip-admin before it starts, registered to by sipp,
    then stopped.
    """

    timeout = 90

    def storeURLFor(self, directory: str) -> str:
        return f"sqlite:///{os.path.join(directory, 'aetasip.db')}"

    def setUp(self) -> None:
        self.sipp = Sipp(requireTool(self, "sipp", "sip-tester"), self.mktemp())
        self.directory = os.path.abspath(self.sipp.directory)
        os.makedirs(self.directory)
        self.storeURL = self.storeURLFor(self.directory)
        self.logFile = os.path.join(self.directory, "twistd.log")
        self.pidFile = os.path.join(self.directory, "twistd.pid")
        for number, password in (("45675001", "secret-one"), ("45675002", "secret-two")):
            out, err = StringIO(), StringIO()
            code = admin.main(["--store", self.storeURL, "account", "add", number, "--password", password], out, err)
            self.assertEqual(code, 0, err.getvalue())

    def log(self) -> str:
        with open(self.logFile) as f:
            return f.read()

    def alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    async def stop(self, pid: int) -> None:
        """SIGTERM to the daemon (this test started it), then wait until it has exited."""
        if not self.alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while self.alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                self.fail(f"the daemon {pid} did not stop within 20 s:\n{self.log()}")
            await deferLater(0.1)

    def storedBindings(self) -> set[str]:
        """The numbers with a binding in the store, read as aetasip-admin reads it: another process's connection."""
        store = Store(self.storeURL)
        store.open()
        try:
            return {binding.aor for binding in store.allBindings(time.time())}
        finally:
            store.close()

    async def waitFor(self, what: str, condition: object, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                self.fail(f"{what} within {seconds:g} s:\n{self.log()}")
            await deferLater(0.1)

    async def startDaemon(self) -> tuple[int, int]:
        """The daemon, stopped at cleanup: its pid and SIP port, once SIP is ready."""
        sip = freePort()
        config = twistdConfig(
            self.directory,
            sip={"listen": ["127.0.0.1"], "udp_ports": [sip], "tcp_ports": [sip]},
            store={"url": self.storeURL},
            stun={"enabled": False},
            web={"listen": "127.0.0.1:0", "control_socket": socketPath(self.directory)},
        )
        executable, argv, env = twistdArguments(
            f"--pidfile={self.pidFile}", f"--logfile={self.logFile}", "aetasip", "--config", config
        )
        out, err, code = await run(executable, *argv[1:], env=env, path=self.directory)
        self.assertEqual((code, out, err), (0, "", ""))  # the parent returns once the daemon is forked
        await self.waitFor("no pid file", lambda: os.path.exists(self.pidFile))
        with open(self.pidFile) as f:
            pid = int(f.read())
        self.addCleanup(self.stop, pid)
        await self.waitFor("SIP not ready", lambda: "SIP ready on" in self.log())
        return pid, sip

    def lockBindings(self) -> Callable[[], None]:
        """
        Take the store's bindings for writing from this process, as another
        writer would: the daemon's writes wait. Returns what lets go (again
        at cleanup).
        """
        if self.storeURL.startswith("sqlite:///"):
            connection = sqlite3.connect(self.storeURL[len("sqlite:///") :], isolation_level=None)
            connection.execute("BEGIN IMMEDIATE")
            engine = None
        else:
            engine = sa.create_engine(self.storeURL)
            connection = engine.connect()
            connection.exec_driver_sql("LOCK TABLE bindings IN EXCLUSIVE MODE")

        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                connection.rollback()
                connection.close()
                if engine is not None:
                    engine.dispose()

        self.addCleanup(release)
        return release

    async def test_daemon_keeps_every_write(self) -> None:
        pid, sip = await self.startDaemon()
        first = await self.sipp.register("45675001", "secret-one", sip)
        self.assertEqual(first.code, 0, first.detail)
        # Bindings reach the store within a second; reading it here closes this process's connection.
        await self.waitFor("the first binding not stored", lambda: self.storedBindings() == {"45675001"})
        second = await self.sipp.register("45675002", "secret-two", sip)
        self.assertEqual(second.code, 0, second.detail)
        await self.waitFor(
            "the daemon's write after another process closed the store is not seen",
            lambda: self.storedBindings() == {"45675001", "45675002"},
        )

        await self.stop(pid)
        self.assertEqual(self.storedBindings(), {"45675001", "45675002"})
        lines = [line.split("] ", 1)[-1] for line in self.log().splitlines()]
        self.assertIn("Store closed: " + describeURL(self.storeURL), lines)
        self.assertEqual([line for line in lines if PORT_NOISE.search(line) or TWISTED_NOISE.match(line)], [])

    async def test_a_second_sigterm_while_stopping_is_only_logged(self) -> None:
        """
        SIGTERM, and another while the daemon stops (here it waits to write
        its last binding, the store taken by another writer): the second
        is logged in one line, not as Twisted's ReactorNotRunning
        traceback, and the shutdown goes on to the end, the binding written.
        """
        pid, sip = await self.startDaemon()
        release = self.lockBindings()
        registered = await self.sipp.register("45675001", "secret-one", sip)
        self.assertEqual(registered.code, 0, registered.detail)

        os.kill(pid, signal.SIGTERM)
        await self.waitFor("the first SIGTERM not logged", lambda: "Received SIGTERM, shutting down." in self.log())
        self.assertTrue(self.alive(pid), self.log())  # waiting for the store
        os.kill(pid, signal.SIGTERM)
        await self.waitFor(
            "the second SIGTERM not logged",
            lambda: "Received SIGTERM while stopping; the shutdown goes on" in self.log(),
        )
        self.assertTrue(self.alive(pid), self.log())
        release()
        await self.waitFor("the daemon still running", lambda: not self.alive(pid), seconds=20)

        self.assertEqual(self.storedBindings(), {"45675001"})
        log = self.log()
        self.assertIn("Store closed: " + describeURL(self.storeURL), log)
        for noise in ("ReactorNotRunning", "Traceback", "Unhandled"):
            self.assertNotIn(noise, log)


class PostgreSQLDaemonTests(DaemonTests):
    """
    On the real PostgreSQL of L{tests.postgres}: skipped without it, failed
    under C{CI=true}.
    """

    def storeURLFor(self, directory: str) -> str:
        return postgresqlURL(self)
