"""
A real OpenLDAP server for the tests: Debian's C{slapd} started on loopback
ports with a generated C{slapd.conf} (mdb database, core/cosine/
inetOrgPerson schema and a small C{aetasipAccount} schema for the SIP
attributes), LDAP with StartTLS and LDAPS with a certificate from
L{tests.certificates.TestCA}, and the accounts of L{ACCOUNTS} loaded.

L{sharedSlapd} starts one lazily for the whole run (stopped at exit);
tests that stop and restart the directory make their own L{Slapd}.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import attrs
from ldap3 import Connection, Server

import twisted.plugins
from aetasip.auth import computeHA1
from tests.certificates import TestCA
from tests.servers import freePort, requireTool, stopProcess

SUFFIX = "dc=aetasip,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
PEOPLE = f"ou=people,{SUFFIX}"
SERVICE_DN = f"cn=aetasip,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret"
REALM = "aetasip"

# The name in the directory's certificate: connecting by 127.0.0.1 (in the
# certificate too) verifies, connecting by "localhost" does not.
TLS_NAME = "ldap.aetasip.test"

PR_SET_PDEATHSIG = 1

# A private OID arc for the test schema: sipPassword (clear text), the two
# HA1 values, and the account kind.
SCHEMA = """\
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'sipPassword'
    EQUALITY caseExactMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.2 NAME 'sipHA1MD5'
    EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.3 NAME 'sipHA1SHA256'
    EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.4 NAME 'sipAccountKind'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'aetasipAccount' SUP top AUXILIARY
    MAY ( sipPassword $ sipHA1MD5 $ sipHA1SHA256 $ sipAccountKind ) )
"""

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {directory}/aetasip.schema

modulepath /usr/lib/ldap
moduleload back_mdb

pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args

TLSCACertificateFile {ca}
TLSCertificateFile {certificate}
TLSCertificateKeyFile {key}

database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{rootDN}"
rootpw {rootPassword}
directory {directory}/data

# Secrets: read by the service account only, usable to bind by anyone.
access to attrs=userPassword,sipPassword,sipHA1MD5,sipHA1SHA256
    by dn.exact="{serviceDN}" read
    by anonymous auth
    by * none
access to * by * read
"""


@attrs.frozen
class Account:
    """
    An account in the test directory and how it keeps its secret.

    @ivar storage: C{"userPassword"} (clear text), C{"sipPassword"}, C{"ha1"}
        (the two HA1 attributes only) or C{"hashed"} (a salted hash in
        userPassword: unusable for digest).
    """

    number: str
    password: str
    kind: str | None
    storage: str


ACCOUNTS = [
    Account("45675001", "secret-one", "premium", "userPassword"),
    Account("45675002", "secret-two", "test", "sipPassword"),
    Account("45675003", "secret-three", "escoopfone", "ha1"),
    Account("45675004", "secret-four", None, "hashed"),
]


def accountEntry(account: Account) -> dict[str, Any]:
    """The LDAP attributes of C{account}."""
    attributes: dict[str, Any] = {
        "objectClass": ["inetOrgPerson", "aetasipAccount"],
        "uid": account.number,
        "cn": f"Codec {account.number}",
        "sn": account.number,
    }
    if account.kind is not None:
        attributes["sipAccountKind"] = account.kind
    if account.storage == "userPassword":
        attributes["userPassword"] = account.password
    elif account.storage == "sipPassword":
        attributes["sipPassword"] = account.password
    elif account.storage == "ha1":
        attributes["sipHA1MD5"] = computeHA1("MD5", account.number, REALM, account.password)
        attributes["sipHA1SHA256"] = computeHA1("SHA-256", account.number, REALM, account.password)
    else:
        attributes["userPassword"] = "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g/PM5DbKkkkA=="
    return attributes


def slapdPath(testCase: Any) -> str:
    """
    The path of slapd (in /usr/sbin, often outside a user's PATH), with
    L{requireTool}'s semantics when it is missing: skipped locally, a
    failure under CI=true.
    """
    path = shutil.which("slapd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))
    return path if path is not None else requireTool(testCase, "slapd", "slapd")


def _prepareChild() -> None:
    # slapd sizes its descriptor table on RLIMIT_NOFILE: huge in containers.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    # Linux: the directory ends with the test run, even a killed one.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Slapd:
    """
    One slapd process of our own in a temporary directory: C{url} (plain
    LDAP, StartTLS offered) and C{ldapsURL}, both on 127.0.0.1.

    @ivar ca: the test CA that signed the directory's certificate.
    """

    def __init__(self, executable: str, ca: TestCA | None = None) -> None:
        self.executable = executable
        self.directory = tempfile.mkdtemp(prefix="aetasip-slapd-")
        self.ca = ca if ca is not None else TestCA(os.path.join(self.directory, "ca"))
        self.port = freePort()
        self.ldapsPort = freePort()
        self.process: subprocess.Popen[bytes] | None = None
        self._loaded = False
        self._configure()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldapsURL(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldapsPort}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _configure(self) -> None:
        certificate, key = self.ca.issue(TLS_NAME, ("127.0.0.1",))
        os.makedirs(os.path.join(self.directory, "data"))
        with open(os.path.join(self.directory, "aetasip.schema"), "w") as f:
            f.write(SCHEMA)
        self.configPath = os.path.join(self.directory, "slapd.conf")
        with open(self.configPath, "w") as f:
            f.write(
                CONFIG.format(
                    directory=self.directory,
                    ca=self.ca.caPath,
                    certificate=certificate,
                    key=key,
                    suffix=SUFFIX,
                    rootDN=ROOT_DN,
                    rootPassword=ROOT_PASSWORD,
                    serviceDN=SERVICE_DN,
                )
            )

    def start(self, timeout: float = 15.0) -> None:
        """
        Start slapd (the accounts are loaded the first time) and return
        once it accepts connections.

        @raise RuntimeError: when it exits or does not listen in time.
        """
        if self.running:
            return
        self.logPath = os.path.join(self.directory, "slapd.log")
        with open(self.logPath, "ab") as log:
            self.process = subprocess.Popen(
                [self.executable, "-f", self.configPath, "-h", f"{self.url}/ {self.ldapsURL}/", "-d", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_prepareChild,
            )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.logPath, errors="replace") as f:
                    raise RuntimeError(f"slapd did not start: {f.read()[-2000:]}")
            time.sleep(0.02)
        if not self._loaded:
            self._load()
            self._loaded = True

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            with socket.create_connection(("127.0.0.1", self.ldapsPort), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop our slapd (by its PID) and wait for it to exit."""
        process, self.process = self.process, None
        stopProcess(process, 10)

    def destroy(self) -> None:
        """Stop and remove the directory's files."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def admin(self) -> Connection:
        """A connection bound as the root DN, for changes made by tests."""
        return Connection(
            Server(self.url, connect_timeout=5), ROOT_DN, ROOT_PASSWORD, auto_bind=True, receive_timeout=5
        )

    def _load(self) -> None:
        connection = self.admin()
        try:
            entries: list[tuple[str, dict[str, Any]]] = [
                (SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": "aetasip", "o": "aetasip tests"}),
                (PEOPLE, {"objectClass": ["organizationalUnit"], "ou": "people"}),
                (f"ou=services,{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": "services"}),
                (
                    SERVICE_DN,
                    {"objectClass": ["organizationalRole", "simpleSecurityObject"], "userPassword": SERVICE_PASSWORD},
                ),
            ]
            entries += [(f"uid={a.number},{PEOPLE}", accountEntry(a)) for a in ACCOUNTS]
            for dn, attributes in entries:
                if not connection.add(dn, attributes=attributes):
                    raise RuntimeError(f"cannot add {dn}: {connection.result}")
        finally:
            connection.unbind()

    def modify(self, number: str, changes: dict[str, Any]) -> None:
        """
        Replace attributes of the account C{number} (C{None} deletes one).
        """
        from ldap3 import MODIFY_DELETE, MODIFY_REPLACE

        connection = self.admin()
        try:
            operations = {
                name: [(MODIFY_DELETE, [])] if value is None else [(MODIFY_REPLACE, [value])]
                for name, value in changes.items()
            }
            if not connection.modify(f"uid={number},{PEOPLE}", operations):
                raise RuntimeError(f"cannot modify {number}: {connection.result}")
        finally:
            connection.unbind()


CHECKOUT_PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "twisted", "plugins")


def useCheckoutPlugins(testCase: Any) -> None:
    """
    Make the checkout's C{twisted/plugins} (with the C{ldap} backend) win
    over those of an installed, possibly older, aetasip for the duration of
    C{testCase}: plugin modules of one name are looked up in
    C{twisted.plugins.__path__} order, and an older copy already imported
    is set aside.
    """
    others = [path for path in twisted.plugins.__path__ if path != CHECKOUT_PLUGINS]
    testCase.patch(twisted.plugins, "__path__", [CHECKOUT_PLUGINS, *others])
    name = "twisted.plugins.aetasip_auth"
    imported = sys.modules.get(name)
    if imported is not None and os.path.dirname(os.path.realpath(imported.__file__ or "")) != os.path.realpath(
        CHECKOUT_PLUGINS
    ):
        del sys.modules[name]
        testCase.addCleanup(sys.modules.__setitem__, name, imported)


_shared: Slapd | None = None


def sharedSlapd(testCase: Any) -> Slapd:
    """
    The directory shared by the tests that do not stop it, started on first
    use and stopped when the test run exits.
    """
    global _shared
    executable = slapdPath(testCase)
    if _shared is None:
        _shared = Slapd(executable)
        atexit.register(_shared.destroy)
    _shared.start()
    return _shared


def privateSlapd(testCase: Any) -> Slapd:
    """
    A directory of C{testCase}'s own (that it may stop and restart),
    removed when the test ends.
    """
    directory = Slapd(slapdPath(testCase))
    testCase.addCleanup(directory.destroy)
    directory.start()
    return directory
