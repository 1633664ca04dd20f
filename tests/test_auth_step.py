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
from aetasip.auth.limits import FailureLimits
from aetasip.auth.step import BANNED, PROXY, WWW, Authenticated, Authentication, Kind, Outcome
from aetasip.sip.digest import DigestAuthenticator, computeResponse, parseDigest
from aetasip.sip.message import Request, Response
from aetasip.sip.parser import parse
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

    @staticmethod
    def nonceOf(value: str) -> str:
        params = parseDigest(value)
        assert params is not None
        return params["nonce"]

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
        """
        The same nonce-count twice is a replay: a new challenge, without
        asking the backend (the nonce is checked first).
        """
        value = answer(self.challenge())
        self.assertIsInstance(self.authenticate(request(credentials=[("Proxy-Authorization", value)])), Authenticated)
        lookups = self.backend.lookups
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual(response.code, 407)
        self.assertNotIn(self.nonceOf(value), response.get("proxy-authenticate") or "")
        self.assertEqual(self.backend.lookups, lookups)

    def test_wrong_password(self) -> None:
        value = answer(self.challenge(), password="wrong")
        response = self.response(request(credentials=[("Proxy-Authorization", value)]))
        self.assertEqual((response.code, response.reason), (403, "Bad credentials"))
        self.assertEqual(response.getAll("proxy-authenticate"), [])
        # No line per failure (an attack makes thousands): FailureLimits counts them.
        self.assertEqual([e for e in self.events if e.get("log_namespace", "").startswith("aetasip.auth")], [])

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


class BruteForceTests(SynchronousTestCase):
    """
    Fault 2 of the audit: 10,000 wrong passwords from one address with a
    single nonce were all answered 403, then the right one succeeded with
    the same nonce; each failure logged an info line.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.digest = DigestAuthenticator(REALM, ("MD5",), 300, now=self.clock.seconds)
        self.backend = FakeAuth({CALLER: PASSWORD}, REALM)
        self.limits = FailureLimits(self.clock.seconds, perAccount=5, perSource=12, window=60, banTime=600)
        self.step = Authentication(self.digest, self.backend, REALM, "aetasip/test", limits=self.limits)
        self.events: list[dict[str, Any]] = []
        observer: Any = self.events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def outcome(self, message: Request, peer: Peer = PEER) -> Outcome:
        outcome = self.step.authenticate(message, PROXY, message.fromAddr.uri.user or "", peer)
        if isinstance(outcome, Deferred):
            return self.successResultOf(outcome)  # type: ignore[no-any-return]
        return outcome

    def challenge(self, peer: Peer = PEER) -> str:
        response = self.outcome(request(), peer)
        assert isinstance(response, Response)
        value = response.get("proxy-authenticate")
        assert value is not None, response
        return value

    def attempt(self, challenge: str, password: str, peer: Peer = PEER, nc: str = "00000001") -> Outcome:
        value = answer(challenge, password=password, nc=nc)
        return self.outcome(request(credentials=[("Proxy-Authorization", value)]), peer)

    def test_a_wrong_response_burns_its_nonce(self) -> None:
        challenge = self.challenge()
        wrong = self.attempt(challenge, "guess")
        assert isinstance(wrong, Response)
        self.assertEqual((wrong.code, wrong.reason), (403, "Bad credentials"))
        # The right password with the same nonce (next nc) is no longer checked.
        lookups = self.backend.lookups
        again = self.attempt(challenge, PASSWORD, nc="00000002")
        assert isinstance(again, Response)
        self.assertEqual(again.code, 407)
        self.assertEqual(self.backend.lookups, lookups)
        # With a fresh nonce it passes.
        self.assertIsInstance(self.attempt(self.challenge(), PASSWORD), Authenticated)

    def test_a_guessing_source_is_banned_then_the_ban_expires(self) -> None:
        spare = self.challenge()
        for i in range(5):
            outcome = self.attempt(self.challenge(), f"guess{i}")
            assert isinstance(outcome, Response)
            self.assertEqual(outcome.code, 403)
        # Banned for that number: the right password is refused without a
        # challenge and without a lookup.
        lookups = self.backend.lookups
        banned = self.outcome(request())
        assert isinstance(banned, Response)
        self.assertEqual((banned.code, banned.reason), (403, BANNED))
        self.assertEqual(banned.getAll("proxy-authenticate"), [])
        self.clock.advance(599)
        refused = self.outcome(request(credentials=[("Proxy-Authorization", answer(spare))]))
        assert isinstance(refused, Response)
        self.assertEqual(refused.reason, BANNED)
        self.assertEqual(self.backend.lookups, lookups)
        self.clock.advance(2)
        self.assertIsInstance(self.attempt(self.challenge(), PASSWORD), Authenticated)
        self.assertEqual(self.limits.counters["bans"], 1)

    def test_the_right_agent_elsewhere_is_never_locked_out(self) -> None:
        attacker = Peer("udp", ("203.0.113.66", 5060), ("127.0.0.1", 5060), lambda data: None)
        for i in range(5):
            self.attempt(self.challenge(attacker), f"guess{i}", attacker)
        self.assertEqual(self.outcome(request(), attacker).reason, BANNED)  # type: ignore[union-attr]
        self.assertIsInstance(self.attempt(self.challenge(), PASSWORD), Authenticated)

    def test_a_source_guessing_many_numbers_is_banned(self) -> None:
        for i in range(12):
            number = f"4567{9000 + i}"
            value = answer(self.challenge(), username=number)
            self.step.authenticate(
                request(caller=number, credentials=[("Proxy-Authorization", value)]), PROXY, number, PEER
            )
        banned = self.outcome(request())
        self.assertEqual(banned.reason, BANNED)  # type: ignore[union-attr]

    def test_ipv6_sources_count_by_64(self) -> None:
        for i in range(5):
            peer = Peer("udp", (f"2001:db8:1:2::{i + 1}", 5060), ("::1", 5060), lambda data: None)
            self.attempt(self.challenge(peer), f"guess{i}", peer)
        other = Peer("udp", ("2001:db8:1:2:ffff::9", 5060), ("::1", 5060), lambda data: None)
        self.assertEqual(self.outcome(request(), other).reason, BANNED)  # type: ignore[union-attr]
        elsewhere = Peer("udp", ("2001:db8:1:3::1", 5060), ("::1", 5060), lambda data: None)
        self.assertEqual(self.outcome(request(), elsewhere).code, 407)  # type: ignore[union-attr]

    def test_failures_log_no_info_line_and_a_ban_logs_one(self) -> None:
        for i in range(5):
            self.attempt(self.challenge(), f"guess{i}")
        levels = [e["log_level"].name for e in self.events if e.get("log_namespace", "").startswith("aetasip.auth")]
        self.assertNotIn("info", levels)
        self.assertEqual(levels.count("warn"), 1)

    def test_a_forged_nonce_costs_no_lookup(self) -> None:
        """Fault 4: any nonce used to trigger a backend lookup before it was verified."""
        forged = answer(self.challenge()).replace('nonce="', 'nonce="AAAA', 1)
        outcome = self.outcome(request(credentials=[("Proxy-Authorization", forged)]))
        assert isinstance(outcome, Response)
        self.assertEqual(outcome.code, 407)
        self.assertEqual(self.backend.lookups, 0)


class AlgorithmChoiceTests(SynchronousTestCase):
    """
    Interop fault of the audit: with MD5 and SHA-256 challenges baresip 1.0
    never registered ('Function not implemented'). Agents that can do
    SHA-256 must still get it, without a downgrade an attacker can force.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.digest = DigestAuthenticator(REALM, ("MD5", "SHA-256"), 300, now=self.clock.seconds)
        self.backend = FakeAuth({CALLER: PASSWORD}, REALM)
        self.step = Authentication(self.digest, self.backend, REALM, "aetasip/test", md5OnlyAgents=("baresip",))

    def challenged(self, agent: str = "") -> list[str | None]:
        message = request("REGISTER")
        if agent:
            message.add("user-agent", agent)
        outcome = self.step.authenticate(message, WWW, CALLER, PEER)
        assert isinstance(outcome, Response)
        return [(parseDigest(value) or {}).get("algorithm") for value in outcome.getAll("www-authenticate")]

    def register(self, algorithm: str, agent: str = "") -> Outcome:
        message = request("REGISTER")
        if agent:
            message.add("user-agent", agent)
        challenge = self.step.authenticate(message, WWW, CALLER, PEER)
        assert isinstance(challenge, Response)
        values = [v for v in challenge.getAll("www-authenticate") if f"algorithm={algorithm}," in v]
        if not values:
            return challenge
        value = answer(values[0], "REGISTER")
        message = request("REGISTER", credentials=[("Authorization", value)])
        if agent:
            message.add("user-agent", agent)
        outcome = self.step.authenticate(message, WWW, CALLER, PEER)
        if isinstance(outcome, Deferred):
            return self.successResultOf(outcome)  # type: ignore[no-any-return]
        return outcome

    def test_every_algorithm_is_offered_by_default(self) -> None:
        self.assertEqual(self.challenged("linphone-desktop/5.1"), ["MD5", "SHA-256"])

    def test_baresip_gets_md5_alone(self) -> None:
        self.assertEqual(self.challenged("baresip v1.0.0 (x86_64/linux)"), ["MD5"])
        self.assertIsInstance(self.register("MD5", "baresip v1.0.0 (x86_64/linux)"), Authenticated)

    def test_a_number_that_used_sha256_is_held_to_it(self) -> None:
        self.assertIsInstance(self.register("SHA-256"), Authenticated)
        self.assertEqual(self.challenged(), ["SHA-256"])
        # A forged User-Agent gets no MD5 challenge for it, and an MD5 response is not accepted.
        self.assertEqual(self.challenged("baresip v1.0.0"), ["SHA-256"])
        md5 = answer(self.digest.challenges(only="MD5")[0], "REGISTER")
        outcome = self.step.authenticate(request("REGISTER", credentials=[("Authorization", md5)]), WWW, CALLER, PEER)
        if isinstance(outcome, Deferred):
            outcome = self.successResultOf(outcome)
        assert isinstance(outcome, Response)
        self.assertEqual(outcome.code, 401)
        self.assertIsInstance(self.register("SHA-256"), Authenticated)
