"""
Tests for L{aetasip.auth.step}: the digest step of the registrar (401) and
the proxy (407), driven with requests built from bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from aetasip.auth import BackendUnavailable, computeHA1
from aetasip.auth.step import PROXY, WWW, Authenticated, Authentication, Kind, Outcome
from aetasip.sip.digest import DigestAuthenticator, computeResponse, parseDigest
from aetasip.sip.message import Request, Response, parse
from aetasip.sip.transaction import Peer
from tests.sipagent import FakeAuth

REALM = "aetasip"
CALLER = "45675001"
PASSWORD = "s3cret"
URI = "sip:45675002@sip.example.net"
PEER = Peer("udp", ("127.0.0.1", 40000), ("127.0.0.1", 5060), lambda data: None)


def request(method: str = "INVITE", caller: str = CALLER, credentials: Sequence[tuple[str, str]] = ()) -> Request:
    """A request from C{caller}, with C{credentials} as (header, value) fields."""
    lines = [
        f"{method} {URI} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-step;rport",
        "Max-Forwards: 70",
        f"From: <sip:{caller}@sip.example.net>;tag=f1",
        f"To: <sip:{CALLER if method == 'REGISTER' else '45675002'}@sip.example.net>",
        "Call-ID: step@test",
        f"CSeq: 1 {method}",
    ]
    lines += [f"{name}: {value}" for name, value in credentials]
    lines.append("Content-Length: 0")
    message = parse(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def answer(
    challenge: str,
    method: str = "INVITE",
    username: str = CALLER,
    password: str = PASSWORD,
    realm: str | None = None,
    nc: str = "00000001",
) -> str:
    """The credentials an agent sends back for C{challenge}."""
    offered = parseDigest(challenge)
    assert offered is not None
    algorithm = offered["algorithm"]
    realm = realm or offered["realm"]
    ha1 = computeHA1(algorithm, username, realm, password)
    response = computeResponse(algorithm, ha1, offered["nonce"], nc, "c0ffee", "auth", method, URI)
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{offered["nonce"]}", uri="{URI}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="c0ffee", '
        f'opaque="{offered["opaque"]}"'
    )


class AuthenticationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.digest = DigestAuthenticator(REALM, ("SHA-256", "MD5"), 300, now=self.clock.seconds)
        self.backend = FakeAuth({CALLER: PASSWORD}, REALM)
        self.step = Authentication(self.digest, self.backend, REALM, "aetasip/test")
        self.events: list[dict[str, Any]] = []
        observer: Any = self.events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def authenticate(self, message: Request, kind: Kind = PROXY, number: str = CALLER) -> Outcome:
        outcome = self.step.authenticate(message, kind, number, PEER)
        if isinstance(outcome, Deferred):
            return self.successResultOf(outcome)  # type: ignore[no-any-return]
        return outcome

    def response(self, message: Request, kind: Kind = PROXY, number: str = CALLER) -> Response:
        outcome = self.authenticate(message, kind, number)
        assert isinstance(outcome, Response), outcome
        return outcome

    def challenge(self, kind: Kind = PROXY, algorithm: str = "MD5", method: str = "INVITE") -> str:
        challenged = self.response(request(method), kind)
        for value in challenged.getAll(kind.challengeHeader):
            if f"algorithm={algorithm}," in value:
                return value
        raise AssertionError(f"no {algorithm} challenge")

    def test_proxy_challenges_with_407(self) -> None:
        """Without credentials the proxy's challenge is a 407, one per algorithm, SHA-256 first."""
        response = self.response(request())
        self.assertEqual(response.code, 407)
        values = response.getAll("proxy-authenticate")
        self.assertEqual(len(values), 2)
        self.assertIn("algorithm=SHA-256", values[0])
        self.assertIn("algorithm=MD5", values[1])
        self.assertEqual(response.getAll("www-authenticate"), [])
        self.assertEqual(response.get("server"), "aetasip/test")
        self.assertEqual(self.backend.lookups, 0)

    def test_registrar_challenges_with_401(self) -> None:
        """The registrar's challenge is a 401 with WWW-Authenticate."""
        response = self.response(request("REGISTER"), WWW)
        self.assertEqual(response.code, 401)
        self.assertEqual(len(response.getAll("www-authenticate")), 2)
        self.assertEqual(response.getAll("proxy-authenticate"), [])

    def test_proxy_accepts_good_credentials(self) -> None:
        """Good credentials give the account, and the field to strip before forwarding."""
        value = answer(self.challenge())
        outcome = self.authenticate(request(credentials=[("Proxy-Authorization", value)]))
        assert isinstance(outcome, Authenticated)
        self.assertEqual(outcome.credentials.number, CALLER)
        self.assertEqual(outcome.header, value)

    def test_registrar_accepts_good_credentials(self) -> None:
        value = answer(self.challenge(WWW, method="REGISTER"), "REGISTER")
        outcome = self.authenticate(request("REGISTER", credentials=[("Authorization", value)]), WWW)
        self.assertIsInstance(outcome, Authenticated)

    def test_wrong_header_for_the_kind_is_challenged(self) -> None:
        """The proxy reads Proxy-Authorization only; the registrar Authorization only."""
        value = answer(self.challenge())
        response = self.response(request(credentials=[("Authorization", value)]))
        self.assertEqual(response.code, 407)
        value = answer(self.challenge(WWW, method="REGISTER"), "REGISTER")
        response = self.response(request("REGISTER", credentials=[("Proxy-Authorization", value)]), WWW)
        self.assertEqual(response.code, 401)

    def test_other_realm_is_left_alone(self) -> None:
        """Credentials for another realm are not judged (RFC 3261 22.3): a challenge, and they stay."""
        other = answer(self.challenge(), realm="elsewhere")
        response = self.response(request(credentials=[("Proxy-Authorization", other)]))
        self.assertEqual(response.code, 407)
        self.assertEqual(self.backend.lookups, 0)

    def test_our_realm_found_among_others(self) -> None:
        """Ours is found after another realm's; the field to strip is ours only."""
        other = answer(self.challenge(), realm="elsewhere")
        ours = answer(self.challenge())
        message = request(credentials=[("Proxy-Authorization", other), ("Proxy-Authorization", ours)])
        outcome = self.authenticate(message)
        assert isinstance(outcome, Authenticated)
        self.assertEqual(outcome.header, ours)

    def test_stale_nonce(self) -> None:
        """A right response with an expired nonce gets a challenge with stale=true."""
        value = answer(self.challenge())
        self.clock.advance(301)
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual(response.code, 407)
        values = response.getAll("proxy-authenticate")
        self.assertEqual(len(values), 2)
        self.assertTrue(all(v.endswith(", stale=true") for v in values))

    def test_replayed_nonce_count(self) -> None:
        """The same nonce-count twice is a replay: 403."""
        value = answer(self.challenge())
        self.assertIsInstance(self.authenticate(request(credentials=[("Proxy-Authorization", value)])), Authenticated)
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual((response.code, response.reason), (403, "Bad credentials"))

    def test_wrong_password(self) -> None:
        value = answer(self.challenge(), password="wrong")
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual((response.code, response.reason), (403, "Bad credentials"))
        self.assertEqual(response.getAll("proxy-authenticate"), [])
        self.assertIn("Bad credentials for {number} from {peer}", [e.get("log_format") for e in self.events])

    def test_unknown_number(self) -> None:
        stranger = "45679999"
        value = answer(self.challenge(), username=stranger)
        response = self.response(
            request(caller=stranger, credentials=[("Proxy-Authorization", value)]), number=stranger
        )
        self.assertEqual((response.code, response.reason), (403, "Bad credentials"))
        self.assertEqual(self.backend.lookups, 1)

    def test_backend_down(self) -> None:
        """A backend failure is a 503 with Retry-After: 30, never an acceptance."""
        self.backend.failure = BackendUnavailable("directory down")
        value = answer(self.challenge())
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual((response.code, response.reason), (503, "Authentication service unavailable"))
        self.assertEqual(response.get("retry-after"), "30")
        warnings = [e for e in self.events if e.get("log_format") == "Authentication backend unavailable: {error}"]
        self.assertEqual(len(warnings), 1)

    def test_backend_failing_later(self) -> None:
        """A backend failing after a while: the Deferred fires with the 503."""
        pending: Deferred[Any] = Deferred()
        self.backend.credentials = lambda number: pending  # type: ignore[method-assign]
        value = answer(self.challenge())
        outcome = self.step.authenticate(request(credentials=[("Proxy-Authorization", value)]), PROXY, CALLER, PEER)
        assert isinstance(outcome, Deferred)
        self.assertNoResult(outcome)
        pending.errback(RuntimeError("bug"))
        response = self.successResultOf(outcome)
        assert isinstance(response, Response)
        self.assertEqual(response.code, 503)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_backend_raising(self) -> None:
        """A backend raising instead of failing its Deferred is a 503 too."""

        def broken(number: str) -> Any:
            raise BackendUnavailable("no connection")

        self.backend.credentials = broken  # type: ignore[method-assign]
        value = answer(self.challenge())
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual(response.code, 503)

    def test_username_mismatch_proxy(self) -> None:
        """The proxy: credentials of another account than the caller's are refused, unchecked."""
        value = answer(self.challenge(), username="45675003")
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual((response.code, response.reason), (403, "Credentials are not those of the caller"))
        self.assertEqual(self.backend.lookups, 0)

    def test_username_mismatch_registrar(self) -> None:
        value = answer(self.challenge(WWW, method="REGISTER"), "REGISTER", username="45675003")
        response = self.response(request("REGISTER", credentials=[("Authorization", value)]), WWW)
        self.assertEqual((response.code, response.reason), (403, "Credentials are not those of the registered number"))

    def test_registrar_not_a_number(self) -> None:
        """The registrar: a non-numeric AOR is a 404, but only once credentials came (RFC 3261 10.3)."""
        self.assertEqual(self.response(request("REGISTER"), WWW, "alice").code, 401)
        value = answer(self.challenge(WWW, method="REGISTER"), "REGISTER", username="alice")
        response = self.response(request("REGISTER", credentials=[("Authorization", value)]), WWW, "alice")
        self.assertEqual((response.code, response.reason), (404, "Not a number of this service"))

    def test_sha256(self) -> None:
        value = answer(self.challenge(algorithm="SHA-256"))
        self.assertIn("algorithm=SHA-256", value)
        outcome = self.authenticate(request(credentials=[("Proxy-Authorization", value)]))
        self.assertIsInstance(outcome, Authenticated)

    def test_no_ha1_for_the_algorithm(self) -> None:
        """An account without an HA1 for the algorithm used gets a new challenge."""
        account = self.backend.accounts[CALLER]
        self.backend.accounts[CALLER] = type(account)(account.number, account.kind, account.realm, {})
        value = answer(self.challenge(algorithm="SHA-256"))
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual(response.code, 407)
        self.assertEqual(len(response.getAll("proxy-authenticate")), 2)
