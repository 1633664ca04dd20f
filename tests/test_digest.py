"""
Tests for L{aetasip.sip.digest}.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from aetasip.auth import computeHA1
from aetasip.sip.digest import DigestAuthenticator, Verdict, algorithmOf, computeResponse, parseDigest

REALM = "aetasip"
USER = "45675001"
PASSWORD = "s3cret pass"
URI = "sip:aetasip.example.net"


def answer(
    challenge: str,
    password: str = PASSWORD,
    method: str = "REGISTER",
    nc: str = "00000001",
    qop: str | None = "auth",
    body: bytes = b"",
    **overrides: str,
) -> dict[str, str]:
    """
    What an agent would send back for C{challenge}, parsed as the server
    parses it.
    """
    offered = parseDigest(challenge)
    assert offered is not None
    algorithm = offered["algorithm"]
    ha1 = computeHA1(algorithm, USER, offered["realm"], password)
    cnonce = "0a4f113b"
    response = computeResponse(algorithm, ha1, offered["nonce"], nc, cnonce, qop, method, URI, body)
    parts = [
        f'username="{USER}"',
        f'realm="{offered["realm"]}"',
        f'nonce="{offered["nonce"]}"',
        f'uri="{URI}"',
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if "opaque" in offered:
        parts.append(f'opaque="{offered["opaque"]}"')
    if qop is not None:
        parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    params = parseDigest("Digest " + ", ".join(parts))
    assert params is not None
    params.update(overrides)
    return params


def ha1Of(params: dict[str, str], password: str = PASSWORD) -> str:
    algorithm = algorithmOf(params)
    assert algorithm is not None
    return computeHA1(algorithm, params["username"], REALM, password)


class ComputeResponseTests(SynchronousTestCase):
    """
    L{computeResponse} against published vectors.
    """

    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"

    def vector(self, algorithm: str) -> str:
        ha1 = computeHA1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
        return computeResponse(algorithm, ha1, self.nonce, "00000001", self.cnonce, "auth", "GET", "/dir/index.html")

    def test_rfc7616_md5_vector(self) -> None:
        """
        RFC 7616 3.9.1, MD5.
        """
        self.assertEqual(self.vector("MD5"), "8ca523f5e9506fed4657c9700eebdbec")

    def test_rfc7616_sha256_vector(self) -> None:
        """
        RFC 7616 3.9.1, SHA-256.
        """
        self.assertEqual(self.vector("SHA-256"), "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")

    def test_rfc2069_without_qop(self) -> None:
        """
        Without qop the response is H(HA1 ":" nonce ":" HA2).
        """
        import hashlib

        ha2 = hashlib.md5(b"REGISTER:sip:x").hexdigest()
        expected = hashlib.md5(f"ha1:n:{ha2}".encode()).hexdigest()
        self.assertEqual(computeResponse("MD5", "ha1", "n", None, None, None, "REGISTER", "sip:x"), expected)

    def test_auth_int_hashes_body(self) -> None:
        """
        With qop=auth-int, HA2 covers the hash of the body.
        """
        import hashlib

        bodyHash = hashlib.sha256(b"v=0\r\n").hexdigest()
        ha2 = hashlib.sha256(f"INVITE:sip:x:{bodyHash}".encode()).hexdigest()
        expected = hashlib.sha256(f"ha1:n:00000001:c:auth-int:{ha2}".encode()).hexdigest()
        self.assertEqual(
            computeResponse("SHA-256", "ha1", "n", "00000001", "c", "auth-int", "INVITE", "sip:x", b"v=0\r\n"),
            expected,
        )


class AlgorithmOfTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        Absent means MD5; spelling is case-insensitive; other algorithms,
        -sess included, are unsupported.
        """
        self.assertEqual(algorithmOf({}), "MD5")
        self.assertEqual(algorithmOf({"algorithm": "md5"}), "MD5")
        self.assertEqual(algorithmOf({"algorithm": "MD5"}), "MD5")
        self.assertEqual(algorithmOf({"algorithm": "sha-256"}), "SHA-256")
        for name in ("MD5-sess", "SHA-256-sess", "SHA-512-256", "SHA256", ""):
            self.assertIsNone(algorithmOf({"algorithm": name}), name)


class ParseDigestTests(SynchronousTestCase):
    """
    L{parseDigest} on well-formed, odd and malformed header values.
    """

    def test_typical(self) -> None:
        value = (
            'Digest username="45675001", realm="x", nonce="abc", uri="sip:a.example;transport=tcp", '
            'response="0123", algorithm=SHA-256, cnonce="c", qop=auth, nc=00000001, opaque="o"'
        )
        self.assertEqual(
            parseDigest(value),
            {
                "username": "45675001",
                "realm": "x",
                "nonce": "abc",
                "uri": "sip:a.example;transport=tcp",
                "response": "0123",
                "algorithm": "SHA-256",
                "cnonce": "c",
                "qop": "auth",
                "nc": "00000001",
                "opaque": "o",
            },
        )

    def test_scheme_and_names_case_insensitive(self) -> None:
        self.assertEqual(parseDigest('DIGEST UserName="u", NONCE=n'), {"username": "u", "nonce": "n"})
        self.assertEqual(parseDigest('digest username="u"'), {"username": "u"})

    def test_escapes(self) -> None:
        """
        Backslash escapes in quoted strings are removed; commas and equals
        signs inside quotes are data.
        """
        self.assertEqual(
            parseDigest(r'Digest username="a\"b\\c", uri="sip:x,y=z", cnonce="\q"'),
            {"username": 'a"b\\c', "uri": "sip:x,y=z", "cnonce": "q"},
        )

    def test_odd_spacing(self) -> None:
        """
        Whitespace, tabs and folded lines around C{=} and C{,}; empty list
        elements; a trailing comma.
        """
        value = 'Digest\t  username = "u"  ,realm="r",\r\n  nonce\t=\t"n" ,, uri="sip:x",'
        self.assertEqual(parseDigest(value), {"username": "u", "realm": "r", "nonce": "n", "uri": "sip:x"})
        self.assertEqual(parseDigest('  Digest username="u"  '), {"username": "u"})

    def test_unquoted_and_quoted_tokens(self) -> None:
        """
        Values may be tokens or quoted strings, whichever the agent chose;
        unquoted values run to the next whitespace or comma.
        """
        self.assertEqual(
            parseDigest('Digest username=45675001, qop="auth", algorithm="MD5", nc=0000000a, cnonce=""'),
            {"username": "45675001", "qop": "auth", "algorithm": "MD5", "nc": "0000000a", "cnonce": ""},
        )
        self.assertEqual(parseDigest("Digest nonce=ab/c+d=, uri=sip:x;lr"), {"nonce": "ab/c+d=", "uri": "sip:x;lr"})

    def test_extended_username(self) -> None:
        """
        RFC 7616 C{username*} is decoded into C{username}.
        """
        self.assertEqual(
            parseDigest("Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=\"r\""),
            {"username": "Jäsøn Doe", "realm": "r"},
        )
        self.assertEqual(parseDigest("Digest username*=iso-8859-1'en'J%E4s"), {"username": "Jäs"})

    def test_bad_extended_username(self) -> None:
        for value in (
            "Digest username*=UTF-8''%C3, realm=r",  # truncated UTF-8
            "Digest username*=UTF-8'%41",  # one quote
            "Digest username*=KOI8-R''%41",  # unknown charset
            "Digest username*=UTF-8''a%zz",  # bad escape
            "Digest username*=UTF-8''x, username=\"y\"",  # both forms
        ):
            self.assertIsNone(parseDigest(value), value)

    def test_garbage(self) -> None:
        for value in (
            "",
            "Digest",
            "Digest ",
            "Basic dXNlcjpwYXNz",
            "Digestusername=u",
            'Digest username="unterminated',
            'Digest username="ends in backslash\\"',
            "Digest username",
            "Digest =x",
            "Digest a=b c=d",
            'Digest a="b"c',
            "Digest a=b, a=c",
            "Digest a=, b=c",
            'Digest a=b"c',
            "Digest ü=1",
            'Digest a="b" "c"',
        ):
            self.assertIsNone(parseDigest(value), value)

    def test_never_raises(self) -> None:
        """
        Random strings built from the syntax's own characters are parsed
        or refused, never raise.
        """
        rng = random.Random(7616)
        alphabet = ['"', "\\", ",", "=", " ", "\t", "\r\n", "a", "Digest ", "username*", "'", "%", "é", "\x00"]
        for _ in range(3000):
            value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(20)))
            result = parseDigest(value)
            self.assertTrue(result is None or isinstance(result, dict))


class AuthenticatorTests(SynchronousTestCase):
    """
    L{DigestAuthenticator} challenges and verification.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.secret = b"k" * 32
        self.auth = DigestAuthenticator(REALM, now=self.clock.seconds, secret=self.secret)

    def challenge(self, algorithm: str = "SHA-256") -> str:
        for value in self.auth.challenges():
            if f"algorithm={algorithm}," in value:
                return value
        raise AssertionError(f"no {algorithm} challenge")

    def verify(self, params: dict[str, str], password: str = PASSWORD, body: bytes = b"") -> Verdict:
        return self.auth.verify(params, "REGISTER", ha1Of(params, password), body)

    def test_challenges(self) -> None:
        """
        One challenge per algorithm, SHA-256 first, each with its own
        nonce, the opaque, qop=auth and stale only when asked.
        """
        challenges = self.auth.challenges()
        self.assertEqual(len(challenges), 2)
        parsed = [parseDigest(c) for c in challenges]
        self.assertEqual([p and p["algorithm"] for p in parsed], ["SHA-256", "MD5"])
        for value, params in zip(challenges, parsed, strict=True):
            self.assertTrue(value.startswith('Digest realm="aetasip", nonce="'))
            assert params is not None
            self.assertEqual(params["realm"], REALM)
            self.assertEqual(params["qop"], "auth")
            self.assertEqual(params["opaque"], self.auth.opaque)
            self.assertNotIn("stale", params)
        # One nonce for both: an agent answers one challenge, and minting costs an HMAC.
        self.assertEqual(parsed[0] and parsed[0]["nonce"], parsed[1] and parsed[1]["nonce"])
        self.assertNotEqual(parsed[0] and parsed[0]["nonce"], parseDigest(self.auth.challenges()[0])["nonce"])  # type: ignore[index]
        for value in self.auth.challenges(stale=True):
            self.assertTrue(value.endswith(", stale=true"))

    def test_configured_algorithms(self) -> None:
        auth = DigestAuthenticator(REALM, algorithms=["MD5"], now=self.clock.seconds)
        [challenge] = auth.challenges()
        self.assertIn("algorithm=MD5", challenge)
        self.assertRaises(ValueError, DigestAuthenticator, REALM, algorithms=["SHA-512-256"])
        self.assertRaises(ValueError, DigestAuthenticator, REALM, algorithms=[])

    def test_realm_is_quoted(self) -> None:
        auth = DigestAuthenticator('a "b" \\c', now=self.clock.seconds)
        params = parseDigest(auth.challenges()[0])
        assert params is not None
        self.assertEqual(params["realm"], 'a "b" \\c')

    def test_round_trip(self) -> None:
        """
        Credentials answering a challenge correctly are OK, with either
        algorithm, even with the response in upper case.
        """
        for algorithm in ("SHA-256", "MD5"):
            params = answer(self.challenge(algorithm))
            self.assertEqual(self.verify(params), Verdict.OK)
        params = answer(self.challenge())
        params["response"] = params["response"].upper()
        self.assertEqual(self.verify(params), Verdict.OK)

    def test_wrong_password(self) -> None:
        params = answer(self.challenge(), password="guess")
        self.assertEqual(self.verify(params), Verdict.BAD)

    def test_wrong_method(self) -> None:
        params = answer(self.challenge(), method="INVITE")
        self.assertEqual(self.verify(params), Verdict.BAD)

    def test_auth_int(self) -> None:
        params = answer(self.challenge(), qop="auth-int", body=b"body")
        self.assertEqual(self.verify(params, body=b"body"), Verdict.OK)
        params = answer(self.challenge(), qop="auth-int", body=b"body")
        self.assertEqual(self.verify(params, body=b"other"), Verdict.BAD)

    def test_tampered_nonce(self) -> None:
        """
        A nonce with any character changed, or of another length, is BAD
        even when the response matches it.
        """
        nonce = parseDigest(self.challenge())["nonce"]  # type: ignore[index]
        for i in (0, 10, 20, 43):
            changed = nonce[:i] + ("A" if nonce[i] != "A" else "B") + nonce[i + 1 :]
            self.assertEqual(self.verifyWithNonce(changed), Verdict.BAD, i)
        for forged in ("", "x", nonce[:-1], nonce + "A", "é" * 44, "!" * 44, "=" * 44):
            self.assertEqual(self.verifyWithNonce(forged), Verdict.BAD, forged)

    def verifyWithNonce(self, nonce: str) -> Verdict:
        challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
        return self.verify(answer(challenge))

    def test_other_secret_or_realm(self) -> None:
        """
        A nonce minted with another secret is BAD; one minted by a server
        sharing the secret and realm (a backup) is OK.
        """
        other = DigestAuthenticator(REALM, now=self.clock.seconds, secret=b"other")
        self.assertEqual(self.verify(answer(other.challenges()[0], opaque=self.auth.opaque)), Verdict.BAD)
        backup = DigestAuthenticator(REALM, now=self.clock.seconds, secret=self.secret)
        self.assertEqual(backup.opaque, self.auth.opaque)
        self.assertEqual(self.verify(answer(backup.challenges()[0])), Verdict.OK)
        otherRealm = DigestAuthenticator("elsewhere", now=self.clock.seconds, secret=self.secret)
        params = answer(otherRealm.challenges()[0], realm=REALM, opaque=self.auth.opaque)
        self.assertEqual(self.verify(params), Verdict.BAD)

    def test_expired_nonce_is_stale(self) -> None:
        """
        A right response on a nonce older than its lifetime is STALE; a
        wrong one stays BAD.
        """
        challenge = self.challenge()
        self.clock.advance(300)
        self.assertEqual(self.verify(answer(challenge)), Verdict.OK)
        self.clock.advance(1)
        self.assertEqual(self.verify(answer(challenge, nc="00000002")), Verdict.STALE)
        self.assertEqual(self.verify(answer(challenge, nc="00000003"), password="guess"), Verdict.BAD)

    def test_nonce_from_the_future(self) -> None:
        """
        A nonce minted by a server whose clock is ahead within the lifetime
        is OK; further ahead it is BAD.
        """
        ahead = Clock()
        ahead.advance(self.clock.seconds() + 200)
        backup = DigestAuthenticator(REALM, now=ahead.seconds, secret=self.secret)
        self.assertEqual(self.verify(answer(backup.challenges()[0])), Verdict.OK)
        ahead.advance(200)
        self.assertEqual(self.verify(answer(backup.challenges()[0])), Verdict.BAD)

    def test_nonce_count(self) -> None:
        """
        Each use of a nonce needs a greater nonce-count: repeating or going
        back is a replay.
        """
        challenge = self.challenge()
        self.assertEqual(self.verify(answer(challenge, nc="00000001")), Verdict.OK)
        self.assertEqual(self.verify(answer(challenge, nc="00000001")), Verdict.BAD)
        self.assertEqual(self.verify(answer(challenge, nc="00000002")), Verdict.OK)
        self.assertEqual(self.verify(answer(challenge, nc="0000000A")), Verdict.OK)
        self.assertEqual(self.verify(answer(challenge, nc="00000005")), Verdict.BAD)
        self.assertEqual(self.verify(answer(challenge, nc="0000000b")), Verdict.OK)
        # A new nonce starts over.
        self.assertEqual(self.verify(answer(self.challenge(), nc="00000001")), Verdict.OK)

    def test_failed_attempt_does_not_consume_nonce_count(self) -> None:
        challenge = self.challenge()
        self.assertEqual(self.verify(answer(challenge, password="guess")), Verdict.BAD)
        self.assertEqual(self.verify(answer(challenge)), Verdict.OK)

    def test_malformed_nonce_count(self) -> None:
        challenge = self.challenge()
        for nc in ("1", "0x000001", "0000_001", "000000001", "0000000g", " 0000001", "+0000001"):
            self.assertEqual(self.verify(answer(challenge, nc=nc)), Verdict.BAD, nc)

    def test_without_qop_single_use(self) -> None:
        """
        RFC 2069 credentials (no qop, nc or cnonce) are accepted once per
        nonce.
        """
        challenge = self.challenge("MD5")
        self.assertEqual(self.verify(answer(challenge, qop=None)), Verdict.OK)
        self.assertEqual(self.verify(answer(challenge, qop=None)), Verdict.BAD)
        self.assertEqual(self.verify(answer(challenge, nc="00000002")), Verdict.BAD)
        # And after a use with qop, not at all.
        challenge = self.challenge("MD5")
        self.assertEqual(self.verify(answer(challenge)), Verdict.OK)
        self.assertEqual(self.verify(answer(challenge, qop=None)), Verdict.BAD)

    def test_wrong_realm(self) -> None:
        params = answer(self.challenge(), realm="other")
        self.assertEqual(
            self.auth.verify(params, "REGISTER", computeHA1("SHA-256", USER, "other", PASSWORD)), Verdict.BAD
        )

    def test_opaque(self) -> None:
        """
        A wrong opaque is BAD; a missing one is tolerated.
        """
        self.assertEqual(self.verify(answer(self.challenge(), opaque="x")), Verdict.BAD)
        params = answer(self.challenge())
        del params["opaque"]
        self.assertEqual(self.verify(params), Verdict.OK)

    def test_missing_fields(self) -> None:
        for name in ("username", "realm", "nonce", "uri", "response", "cnonce", "nc"):
            params = answer(self.challenge())
            del params[name]
            self.assertEqual(
                self.auth.verify(params, "REGISTER", computeHA1("SHA-256", USER, REALM, PASSWORD)), Verdict.BAD, name
            )

    def test_unsupported_algorithm_or_qop(self) -> None:
        ha1 = computeHA1("SHA-256", USER, REALM, PASSWORD)
        for name in ("SHA-256-sess", "SHA-512-256"):
            self.assertEqual(self.auth.verify(answer(self.challenge(), algorithm=name), "REGISTER", ha1), Verdict.BAD)
        for qop in ("auth-conf", "AUTH"):
            self.assertEqual(self.verify(answer(self.challenge(), qop=qop)), Verdict.BAD, qop)
        params = answer(self.challenge())
        params["qop"] = ""
        self.assertEqual(self.verify(params), Verdict.BAD)
        self.assertEqual(self.verify(answer(self.challenge(), userhash="true")), Verdict.BAD)

    def test_algorithm_not_offered(self) -> None:
        """
        An algorithm the operator disabled is refused even with a right
        response.
        """
        auth = DigestAuthenticator(REALM, algorithms=["SHA-256"], now=self.clock.seconds, secret=self.secret)
        params = answer(self.challenge("MD5"))
        self.assertEqual(auth.verify(params, "REGISTER", ha1Of(params)), Verdict.BAD)

    def test_odd_values_never_raise(self) -> None:
        params = answer(self.challenge(), response="é" * 64)
        self.assertEqual(self.verify(params), Verdict.BAD)
        params = answer(self.challenge(), uri="sip:\ud800")
        self.assertEqual(self.verify(params), Verdict.BAD)
        params = answer(self.challenge(), nc="é" * 8)
        self.assertEqual(self.verify(params), Verdict.BAD)

    def test_expired_state_is_dropped(self) -> None:
        """
        Replay state is forgotten once its nonce has expired.
        """
        for _ in range(5):
            self.assertEqual(self.verify(answer(self.challenge())), Verdict.OK)
        self.assertEqual(len(self.auth._seen), 5)
        self.clock.advance(301)
        self.assertEqual(self.verify(answer(self.challenge())), Verdict.OK)
        self.assertEqual(len(self.auth._seen), 1)

    def test_eviction_never_allows_replay(self) -> None:
        """
        Past C{maxNonces}, the oldest state is evicted; requests on nonces
        whose state may be lost are STALE (the agent retries with a fresh
        nonce), never accepted as possible replays.
        """
        auth = DigestAuthenticator(REALM, now=self.clock.seconds, secret=self.secret, maxNonces=2)
        first, unused = auth.challenges()[0], auth.challenges()[0]
        self.clock.advance(1)
        second, third = auth.challenges()[0], auth.challenges()[0]

        def verify(challenge: str, nc: str = "00000001") -> Verdict:
            params = answer(challenge, nc=nc)
            return auth.verify(params, "REGISTER", ha1Of(params))

        self.assertEqual(verify(first), Verdict.OK)
        self.assertEqual(verify(second), Verdict.OK)
        self.assertEqual(verify(third), Verdict.OK)  # evicts first
        self.assertEqual(len(auth._seen), 2)
        self.assertEqual(verify(first), Verdict.STALE)
        self.assertEqual(verify(unused), Verdict.STALE)
        self.assertEqual(verify(second, "00000002"), Verdict.OK)
        self.assertEqual(verify(third), Verdict.BAD)
