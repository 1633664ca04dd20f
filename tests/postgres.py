"""
A real PostgreSQL server for the tests.

The first test that asks for a database starts one server for the whole
test run: C{initdb} into a new temporary directory, then C{postgres} on
127.0.0.1, a free port and a socket directory of its own, with password
(SCRAM) authentication. Each test then gets a database of its own, made
with C{CREATE DATABASE} and dropped when the test ends, owned by an
ordinary role (not a superuser), as in production. The server is stopped,
by its process id, and its directory removed when trial ends the run
(before the interpreter waits for threads a test may have left running),
or else when the interpreter exits.

PostgreSQL refuses to run as root: when the tests run as root, C{initdb}
and C{postgres} run as the C{postgres} system user that the Debian
package creates.

PostgreSQL is the Debian package C{postgresql} (binaries under
C{/usr/lib/postgresql/VERSION/bin}). When it is missing the tests that
need it are skipped, and fail under C{CI=true}, like L{requireTool}.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, NoReturn

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest

from tests.servers import CI, freePort

HOST = "127.0.0.1"

# The role the tests' stores connect as: it owns each test database.
USER = "aetasip"

# The superuser the fixture itself uses to create and drop databases.
ADMIN = "postgres"

PACKAGE = "postgresql"

# Seconds allowed for the server to accept connections, and to shut down.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def binDirectory() -> str | None:
    """
    The directory of C{initdb} and C{postgres}: the newest
    C{/usr/lib/postgresql/VERSION/bin} of Debian, else the directory of
    C{initdb} on C{PATH}; C{None} when PostgreSQL is not installed.
    """

    def version(directory: str) -> tuple[int, ...]:
        name = os.path.basename(os.path.dirname(directory))
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    for directory in candidates:
        if all(os.access(os.path.join(directory, name), os.X_OK) for name in ("initdb", "postgres")):
            return directory
    return None


def serverAccount() -> pwd.struct_passwd | None:
    """
    The system user to run PostgreSQL as: C{postgres} when we are root
    (PostgreSQL refuses to run as root), else C{None} (ourselves).

    @raise KeyError: when we are root and there is no C{postgres} user.
    """
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("postgres")


class PostgreSQLServer:
    """
    One PostgreSQL server in a temporary directory.

    @ivar port: the TCP port it listens on, on L{host}.
    @ivar host: the address it listens on (L{HOST}; a test's network
        namespace may give it another).
    @ivar directory: the temporary directory: C{data}, C{socket}, C{postgres.log}.
    @ivar process: the C{postgres} process while it runs.
    """

    def __init__(self, binaries: str, account: pwd.struct_passwd | None) -> None:
        """
        @param binaries: the directory of C{initdb} and C{postgres}.
        @param account: the system user to run them as, or C{None} for ourselves.
        """
        self.binaries = binaries
        self.account = account
        self.adminPassword = secrets.token_urlsafe(16)
        self.userPassword = secrets.token_urlsafe(16)
        self.directory = tempfile.mkdtemp(prefix="aetasip-postgresql-")
        self.port = 0
        self.host = HOST
        # A network (CIDR) whose hosts may connect besides loopback, or None.
        self.clients: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0

    @property
    def dataDirectory(self) -> str:
        return os.path.join(self.directory, "data")

    @property
    def socketDirectory(self) -> str:
        return os.path.join(self.directory, "socket")

    @property
    def logPath(self) -> str:
        return os.path.join(self.directory, "postgres.log")

    def _ownedByServer(self, path: str) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _processOptions(self) -> dict[str, Any]:
        """
        Keyword arguments of L{subprocess} for the server's programs: as the
        server account, without our C{PG*} variables (C{PGDATA}, C{PGPORT}...).
        """
        environment = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
        environment.update({"LC_ALL": "C", "HOME": self.directory})
        options: dict[str, Any] = {"cwd": self.directory, "env": environment, "stdin": subprocess.DEVNULL}
        if self.account is not None:
            options.update(user=self.account.pw_uid, group=self.account.pw_gid, extra_groups=[])
        return options

    def start(self) -> None:
        """
        Make the cluster and start the server; return once it accepts
        connections.

        @raise RuntimeError: when C{initdb} fails or the server does not start.
        """
        self._ownedByServer(self.directory)
        self._initdb()
        os.mkdir(self.socketDirectory)
        self._ownedByServer(self.socketDirectory)
        # The free port may be taken between our check and the server's bind: try again.
        for attempt in range(3):
            self.port = freePort(host=self.host)
            if self._startServer():
                break
            if attempt == 2:
                raise RuntimeError(f"postgres did not start:\n{self.log()}")
        with self.connect() as connection:
            connection.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{self.userPassword}'")

    def _initdb(self) -> None:
        passwordFile = os.path.join(self.directory, "password")
        with open(passwordFile, "w") as f:
            f.write(self.adminPassword + "\n")
        self._ownedByServer(passwordFile)
        try:
            result = subprocess.run(
                [
                    os.path.join(self.binaries, "initdb"),
                    "--pgdata", self.dataDirectory,
                    "--username", ADMIN,
                    "--pwfile", passwordFile,
                    "--auth", "scram-sha-256",
                    "--encoding", "UTF8",
                    "--locale", "C",
                    "--no-sync",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                **self._processOptions(),
            )  # fmt: skip
        finally:
            os.remove(passwordFile)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout.decode(errors='replace')}")
        if self.clients is not None:
            with open(os.path.join(self.dataDirectory, "pg_hba.conf"), "a") as f:
                f.write(f"host all all {self.clients} scram-sha-256\n")

    def _startServer(self) -> bool:
        """
        Start C{postgres} on L{port}.

        @return: whether it accepts connections; when it does not, it is stopped.
        """
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(
                [
                    os.path.join(self.binaries, "postgres"),
                    "-D", self.dataDirectory,
                    "-c", f"listen_addresses={self.host}",
                    "-c", f"port={self.port}",
                    "-c", f"unix_socket_directories={self.socketDirectory}",
                    # A throw-away cluster: durability only slows the tests down.
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                    "-c", "max_connections=200",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._processOptions(),
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                self.connect(timeout=1).close()
            except Exception:
                time.sleep(0.05)
            else:
                return True
        self._terminate()
        return False

    def log(self) -> str:
        """
        The end of the server's log, for error messages.
        """
        try:
            with open(self.logPath, "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def connect(self, database: str = "postgres", timeout: int = 10) -> Any:
        """
        A psycopg connection as the superuser, in autocommit mode.
        """
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=ADMIN,
            password=self.adminPassword,
            dbname=database,
            autocommit=True,
            connect_timeout=timeout,
        )

    def url(self, database: str) -> str:
        """
        The C{store.url} of C{database} for the ordinary role L{USER}.
        """
        return f"postgresql://{USER}:{self.userPassword}@{self.host}:{self.port}/{database}"

    def createDatabase(self) -> str:
        """
        Create a new, empty database owned by L{USER}.

        @return: its name.
        """
        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        with self.connect() as connection:
            connection.execute(f"CREATE DATABASE {name} OWNER {USER}")
        return name

    def dropDatabase(self, name: str) -> None:
        """
        Drop the database C{name}, closing the connections still open to it.
        """
        with self.connect() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self._terminate()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _terminate(self) -> None:
        """
        Stop the server process by its id: fast shutdown, then harder if it hangs.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                process.send_signal(sig)
                try:
                    process.wait(STOP_TIMEOUT)
                    break
                except subprocess.TimeoutExpired:
                    continue


_server: PostgreSQLServer | None = None
_startError: str | None = None


def _missing(testCase: Any, message: str) -> NoReturn:
    if CI:
        raise testCase.failureException(message)
    raise SkipTest(message)


def server(testCase: Any) -> PostgreSQLServer:
    """
    The PostgreSQL server of this test run, started on first use.

    Without PostgreSQL the test is skipped (it fails under C{CI=true}); a
    server that does not start fails every test that needs it.
    """
    global _server, _startError
    if _server is not None:
        return _server
    if _startError is not None:
        raise testCase.failureException(_startError)
    binaries = binDirectory()
    if binaries is None:
        _missing(testCase, f"PostgreSQL is not installed (Debian package {PACKAGE}; see README.rst)")
    try:
        account = serverAccount()
    except KeyError:
        _missing(testCase, f"there is no postgres system user to run PostgreSQL as (Debian package {PACKAGE})")
    candidate = PostgreSQLServer(binaries, account)
    # Stopped when trial ends the run (it fires the reactor's shutdown), or
    # at the latest when the interpreter exits.
    reactor.addSystemEventTrigger("before", "shutdown", stopServer)
    atexit.register(candidate.stop)
    try:
        candidate.start()
    except Exception as e:
        candidate.stop()
        _startError = f"PostgreSQL did not start: {e}"
        raise testCase.failureException(_startError) from None
    _server = candidate
    return candidate


def stopServer() -> None:
    """
    Stop the server of this test run, if it runs; the next test that needs
    one starts another.
    """
    global _server
    running, _server = _server, None
    if running is not None:
        running.stop()


def postgresqlURL(testCase: Any) -> str:
    """
    The C{store.url} of a new, empty database for C{testCase}, dropped when
    the test ends: C{postgresql://aetasip:PASSWORD@127.0.0.1:PORT/NAME}.
    """
    running = server(testCase)
    name = running.createDatabase()
    testCase.addCleanup(running.dropDatabase, name)
    return running.url(name)


def unreachableURL() -> str:
    """
    A C{store.url} on a loopback port where nothing listens.
    """
    return f"postgresql://{USER}:secret-password@{HOST}:{freePort(host=HOST)}/aetasip"
