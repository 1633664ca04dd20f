"""
A real SMTP server for the tests (C{aiosmtpd}), run as its own process on
loopback: STARTTLS required (with a certificate of L{tests.certificates}),
AUTH PLAIN/LOGIN required after it, each message accepted written to a
directory as C{N.eml} (with its envelope in C{N.env}). L{SMTPServer}
starts and stops it; stopping it is a mail outage.

    python3 tests/smtpserver.py PORT CERT KEY USER PASSWORD DIRECTORY
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from tests.servers import CI


class _Watcher(ProcessProtocol):
    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"ready" in self.output and not self.ready.called:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"the SMTP server did not start:\n{self.output.decode(errors='replace')}"))
        self.ended.callback(None)


class SMTPServer:
    """
    The test SMTP server: C{start()} and C{stop()} it as often as needed
    (same port, same directory); C{messages()} are the ones it accepted.
    """

    def __init__(self, testCase: Any, port: int, cert: str, key: str, user: str, password: str) -> None:
        try:
            import aiosmtpd  # noqa: F401
        except ImportError:
            message = "aiosmtpd is not installed (pip extra 'test'; see README.rst)"
            if CI:
                testCase.fail(message)
            raise SkipTest(message) from None
        self.port = port
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.args = [str(port), cert, key, user, password, self.directory]
        self.watcher: _Watcher | None = None
        testCase.addCleanup(self.stop)

    def start(self) -> Deferred[None]:
        self.watcher = _Watcher()
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=top)
        reactor.spawnProcess(  # type: ignore[attr-defined]
            self.watcher, sys.executable, [sys.executable, os.path.abspath(__file__), *self.args], env=env
        )
        return self.watcher.ready

    def stop(self) -> Deferred[None] | None:
        watcher, self.watcher = self.watcher, None
        if watcher is None or watcher.ended.called:
            return None
        watcher.transport.signalProcess("TERM")  # type: ignore[union-attr]
        return watcher.ended

    def messages(self) -> list[tuple[dict[str, Any], bytes]]:
        """The envelopes and messages accepted, in order."""
        found = []
        names = sorted(int(n[:-4]) for n in os.listdir(self.directory) if n.endswith(".eml"))
        for n in names:
            with open(os.path.join(self.directory, f"{n}.env")) as f:
                envelope = json.load(f)
            with open(os.path.join(self.directory, f"{n}.eml"), "rb") as f:
                found.append((envelope, f.read()))
        return found


def _serve(port: int, cert: str, key: str, user: str, password: str, directory: str) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with lock:
                n = len([name for name in os.listdir(directory) if name.endswith(".eml")]) + 1
                with open(os.path.join(directory, f"{n}.env"), "w") as f:
                    json.dump(
                        {
                            "from": envelope.mail_from,
                            "to": envelope.rcpt_tos,
                            "tls": session.ssl is not None,
                            "login": session.authenticated and user,
                        },
                        f,
                    )
                with open(os.path.join(directory, f"{n}.eml"), "wb") as f:
                    f.write(envelope.original_content or envelope.content)
            return "250 Message accepted for delivery"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        if isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode():
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    controller.start()
    print("ready", flush=True)
    stopped.wait()
    controller.stop()


if __name__ == "__main__":
    port, cert, key, user, password, directory = sys.argv[1:]
    _serve(int(port), cert, key, user, password, directory)
