"""
Registrar behaviour (RFC 3261 section 10.3), driven with bytes and a Clock
through the SIP core: parsing, transactions, digest and location included.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from aetasip.auth import BackendUnavailable
from tests.sipagent import Agent, FakeAuth, Harness


class ChallengeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.agent = Agent("45675001", "secret1")

    def test_register_without_credentials_is_challenged(self) -> None:
        reply = self.h.sendOne(self.agent.register())
        self.assertEqual(reply.code, 401)
        challenges = reply.all("www-authenticate")
        self.assertEqual(len(challenges), 2)
        self.assertIn("algorithm=MD5", challenges[0])
        self.assertIn("algorithm=SHA-256", challenges[1])
        for challenge in challenges:
            self.assertIn('qop="auth"', challenge)
            self.assertIn('realm="aetasip"', challenge)
            self.assertIn("opaque=", challenge)
        self.assertEqual(self.h.location.lookup("45675001"), [])

    def test_agents_that_know_md5_alone_get_its_challenge_alone(self) -> None:
        """
        baresip 1.0 refuses the whole registration when a SHA-256 challenge
        comes with the MD5 one; agents named in auth.md5_only_agents
        (baresip by default) get the MD5 challenge alone, and register.
        """
        for userAgent in ("baresip v1.0.0 (x86_64/linux)", "BareSIP"):
            reply = self.h.sendOne(self.agent.register(extra=[f"User-Agent: {userAgent}"]))
            challenges = reply.all("www-authenticate")
            self.assertEqual(len(challenges), 1, userAgent)
            self.assertIn("algorithm=MD5", challenges[0])
        other = self.h.sendOne(self.agent.register(extra=["User-Agent: Linphone/5.1.65"]))
        self.assertEqual(len(other.all("www-authenticate")), 2)
        reply = self.h.register(self.agent, extra=["User-Agent: baresip v1.0.0"])
        self.assertEqual(reply.code, 200)

    def test_md5_only_agents_are_configurable(self) -> None:
        h = Harness(auth__md5_only_agents=["OldCodec/"])
        reply = h.sendOne(self.agent.register(extra=["User-Agent: baresip v1.0.0"]))
        self.assertEqual(len(reply.all("www-authenticate")), 2)
        reply = h.sendOne(self.agent.register(extra=["User-Agent: OldCodec/2.1"]))
        self.assertEqual(len(reply.all("www-authenticate")), 1)
        # Where MD5 is not offered at all, nobody gets it.
        h = Harness(auth__algorithms=["SHA-256"])
        reply = h.sendOne(self.agent.register(extra=["User-Agent: baresip v1.0.0"]))
        self.assertEqual([c.count("SHA-256") for c in reply.all("www-authenticate")], [1])

    def test_md5_credentials_register(self) -> None:
        reply = self.h.register(self.agent)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.all("contact"), ["<sip:45675001@127.0.0.1:40000>;expires=3600"])
        self.assertIsNotNone(reply.get("date"))

    def test_sha256_credentials_register(self) -> None:
        reply = self.h.register(self.agent, algorithm="SHA-256")
        self.assertEqual(reply.code, 200)
        self.assertEqual(len(self.h.location.lookup("45675001")), 1)

    def test_wrong_password_is_forbidden(self) -> None:
        challenge = self.h.sendOne(self.agent.register())
        reply = self.h.sendOne(self.agent.register(auth=challenge.challenge(), password="wrong"))
        self.assertEqual((reply.code, reply.reason), (403, "Bad credentials"))
        self.assertEqual(self.h.location.lookup("45675001"), [])

    def test_unknown_number_gets_the_same_answer_as_a_wrong_password(self) -> None:
        stranger = Agent("45679999", "whatever")
        reply = self.h.register(stranger)
        self.assertEqual((reply.code, reply.reason), (403, "Bad credentials"))

    def test_credentials_of_one_account_never_register_another(self) -> None:
        challenge = self.h.sendOne(self.agent.register(toNumber="45675002"))
        reply = self.h.sendOne(
            self.agent.register(auth=challenge.challenge(), toNumber="45675002", username="45675001")
        )
        self.assertEqual(reply.code, 403)
        self.assertEqual(self.h.location.lookup("45675002"), [])

    def test_replayed_credentials_are_refused(self) -> None:
        challenge = self.h.sendOne(self.agent.register())
        auth = challenge.challenge()
        first = self.agent.register(auth=auth)
        self.assertEqual(self.h.sendOne(first).code, 200)
        # The same Authorization (same nonce and nc) in a new request: a replay.
        self.agent.nc -= 1
        replay = self.h.sendOne(self.agent.register(auth=auth))
        # Refused before any lookup: a new challenge, with a new nonce.
        self.assertEqual(replay.code, 401)
        self.assertNotEqual(replay.challenge()["nonce"], auth["nonce"])

    def test_expired_nonce_is_challenged_again_as_stale(self) -> None:
        challenge = self.h.sendOne(self.agent.register())
        self.h.clock.advance(self.h.config["auth.nonce_lifetime"] + 1)
        reply = self.h.sendOne(self.agent.register(auth=challenge.challenge()))
        self.assertEqual(reply.code, 401)
        self.assertIn("stale=true", reply.get("www-authenticate") or "")

    def test_backend_unavailable_answers_503_with_retry_after(self) -> None:
        challenge = self.h.sendOne(self.agent.register())
        self.h.auth.failure = BackendUnavailable("directory down")
        reply = self.h.sendOne(self.agent.register(auth=challenge.challenge()))
        self.assertEqual(reply.code, 503)
        self.assertEqual(reply.get("retry-after"), "30")
        self.assertEqual(self.h.location.lookup("45675001"), [])


class DomainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def test_every_alias_is_one_user_space(self) -> None:
        for domain in ("sip.example.net", "sip.example.fr", "127.0.0.1"):
            agent = Agent("45675001", "secret1", domain=domain, contact="sip:45675001@127.0.0.1:40000")
            self.assertEqual(self.h.register(agent).code, 200)
        self.assertEqual(len(self.h.location.lookup("45675001")), 1)

    def test_domain_not_served_is_refused(self) -> None:
        agent = Agent("45675001", "secret1", domain="sip.elsewhere.org")
        reply = self.h.sendOne(agent.register())
        self.assertEqual((reply.code, reply.reason), (403, "Domain not served here"))

    def test_unknown_required_extension_gets_420(self) -> None:
        agent = Agent("45675001", "secret1")
        reply = self.h.sendOne(agent.register(extra=["Require: foo, path"]))
        self.assertEqual(reply.code, 420)
        self.assertEqual(reply.get("unsupported"), "foo")


class BindingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.agent = Agent(
            "45675001", "secret1", source=("198.51.100.7", 40123), contact="sip:45675001@192.168.1.10:5060"
        )

    def test_binding_remembers_where_the_register_came_from(self) -> None:
        self.h.register(self.agent)
        (binding,) = self.h.location.lookup("45675001")
        self.assertEqual(binding.contact, "sip:45675001@192.168.1.10:5060")
        self.assertEqual(binding.source, ("198.51.100.7", 40123))
        self.assertEqual(binding.transport, "udp")
        self.assertEqual(binding.local, ("127.0.0.1", 5060))
        self.assertEqual(binding.userAgent, "test-agent/1.0")

    def test_response_goes_to_the_real_source_with_received_and_rport(self) -> None:
        reply = self.h.register(self.agent)
        destination, _ = self.h.sent[-1]
        self.assertEqual(destination, ("198.51.100.7", 40123))
        self.assertIn(";rport=40123;received=198.51.100.7", reply.get("via") or "")

    def test_refresh_keeps_one_binding_and_extends_it(self) -> None:
        self.h.register(self.agent, expires=600)
        self.h.clock.advance(300)
        reply = self.h.register(self.agent, expires=600)
        self.assertEqual(reply.all("contact"), ["<sip:45675001@192.168.1.10:5060>;expires=600"])
        self.assertEqual([e.kind for e in self.h.events], ["registered", "refreshed"])

    def test_expires_zero_removes_the_binding(self) -> None:
        self.h.register(self.agent)
        reply = self.h.register(self.agent, expires=0)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.all("contact"), [])
        self.assertEqual(self.h.location.lookup("45675001"), [])
        self.assertEqual(self.h.events[-1].kind, "unregistered")

    def test_contact_expires_parameter_wins_over_header(self) -> None:
        reply = self.h.register(self.agent, contacts=["<sip:45675001@192.168.1.10:5060>;expires=120"], expires=3600)
        self.assertEqual(reply.all("contact"), ["<sip:45675001@192.168.1.10:5060>;expires=120"])

    def test_too_brief_interval_gets_423_with_min_expires(self) -> None:
        reply = self.h.register(self.agent, expires=10)
        self.assertEqual(reply.code, 423)
        self.assertEqual(reply.get("min-expires"), "60")

    def test_long_interval_is_shortened_to_the_maximum(self) -> None:
        reply = self.h.register(self.agent, expires=999999)
        self.assertEqual(reply.all("contact"), ["<sip:45675001@192.168.1.10:5060>;expires=3600"])

    def test_default_expiry_applies_without_expires(self) -> None:
        h = Harness(registrar__default_expires=1800)
        reply = h.register(self.agent, expires=None)
        self.assertEqual(reply.all("contact"), ["<sip:45675001@192.168.1.10:5060>;expires=1800"])

    def test_query_lists_bindings_without_changing_them(self) -> None:
        self.h.register(self.agent)
        reply = self.h.register(self.agent, contacts=[], expires=None)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.all("contact"), ["<sip:45675001@192.168.1.10:5060>;expires=3600"])
        self.assertEqual(len(self.h.events), 1)

    def test_wildcard_removes_every_binding(self) -> None:
        h = Harness(registrar__conflict="allow")
        h.register(self.agent)
        h.register(Agent("45675001", "secret1", source=("203.0.113.9", 5060)))
        self.assertEqual(len(h.location.lookup("45675001")), 2)
        reply = h.register(self.agent, contacts=["*"], expires=0)
        self.assertEqual(reply.code, 200)
        self.assertEqual(h.location.lookup("45675001"), [])

    def test_wildcard_needs_expires_zero(self) -> None:
        reply = self.h.register(self.agent, contacts=["*"], expires=60)
        self.assertEqual(reply.code, 400)

    def test_out_of_order_register_gets_500(self) -> None:
        self.h.register(self.agent)
        self.agent.cseq -= 3
        reply = self.h.register(self.agent)
        self.assertEqual(reply.code, 500)

    def test_binding_expires_on_time(self) -> None:
        self.h.register(self.agent, expires=60)
        self.h.clock.advance(59)
        self.assertEqual(len(self.h.location.lookup("45675001")), 1)
        self.h.clock.advance(2)
        self.assertEqual(self.h.location.lookup("45675001"), [])
        self.assertEqual([e.kind for e in self.h.events], ["registered", "expired"])

    def test_instance_and_reg_id_identify_the_binding(self) -> None:
        instance = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
        first = f"<sip:45675001@192.168.1.10:5060>;+sip.instance={instance};reg-id=1"
        moved = f"<sip:45675001@192.168.1.99:5062>;+sip.instance={instance};reg-id=1"
        self.h.register(self.agent, contacts=[first])
        self.agent.callID = "after-reboot@test"
        reply = self.h.register(self.agent, contacts=[moved])
        self.assertEqual(reply.code, 200)
        (binding,) = self.h.location.lookup("45675001")
        self.assertEqual(binding.contact, "sip:45675001@192.168.1.99:5062")
        self.assertEqual(binding.instance, "urn:uuid:00000000-0000-1000-8000-000A95A0E128")
        self.assertEqual(binding.regID, 1)
        self.assertIn("reg-id=1", reply.get("contact") or "")

    def test_path_is_stored_and_echoed_when_supported(self) -> None:
        extra = ["Supported: path", "Path: <sip:edge.example.net;lr>"]
        reply = self.h.register(self.agent, extra=extra)
        self.assertEqual(reply.get("path"), "<sip:edge.example.net;lr>")
        (binding,) = self.h.location.lookup("45675001")
        self.assertEqual(binding.path, ["<sip:edge.example.net;lr>"])

    def test_too_many_contacts_are_refused(self) -> None:
        h = Harness(registrar__max_contacts=2)
        contacts = [f"<sip:45675001@192.168.1.10:{5060 + i}>" for i in range(3)]
        reply = h.register(self.agent, contacts=contacts)
        self.assertEqual(reply.code, 403)
        self.assertEqual(h.location.lookup("45675001"), [])


class ConflictTests(SynchronousTestCase):
    """One account on two agents (guide 5.2): detected, logged, deterministic."""

    def setUp(self) -> None:
        self.first = Agent("45675001", "secret1", source=("198.51.100.7", 5060), contact="sip:45675001@10.0.0.7:5060")
        self.second = Agent("45675001", "secret1", source=("203.0.113.9", 5060), contact="sip:45675001@10.0.0.9:5060")

    def conflict(self, policy: str) -> tuple[Harness, int]:
        h = Harness(registrar__conflict=policy)
        self.assertEqual(h.register(self.first).code, 200)
        code = h.register(self.second).code
        (event,) = [e for e in h.events if e.kind == "conflict"]
        self.assertEqual(event.binding.source, ("203.0.113.9", 5060))
        self.assertEqual(event.other.source, ("198.51.100.7", 5060))
        return h, code

    def test_reject_keeps_the_registered_agent(self) -> None:
        h, code = self.conflict("reject")
        self.assertEqual(code, 403)
        (binding,) = h.location.lookup("45675001")
        self.assertEqual(binding.source, ("198.51.100.7", 5060))
        self.assertEqual(next(e for e in h.events if e.kind == "conflict").outcome, "rejected")

    def test_rejected_agent_may_still_register_once_the_other_is_gone(self) -> None:
        h, _ = self.conflict("reject")
        h.register(self.first, expires=0)
        self.assertEqual(h.register(self.second).code, 200)

    def test_replace_gives_the_number_to_the_newcomer(self) -> None:
        h, code = self.conflict("replace")
        self.assertEqual(code, 200)
        (binding,) = h.location.lookup("45675001")
        self.assertEqual(binding.source, ("203.0.113.9", 5060))

    def test_allow_keeps_both(self) -> None:
        h, code = self.conflict("allow")
        self.assertEqual(code, 200)
        self.assertEqual(len(h.location.lookup("45675001")), 2)

    def test_refresh_by_the_same_agent_is_no_conflict(self) -> None:
        h = Harness()
        h.register(self.first)
        # A reboot: new Call-ID, same contact.
        self.first.callID = "reboot@test"
        self.assertEqual(h.register(self.first).code, 200)
        self.assertEqual([e.kind for e in h.events], ["registered", "refreshed"])


class TransactionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.agent = Agent("45675001", "secret1")

    def test_retransmission_is_answered_from_the_transaction(self) -> None:
        challenge = self.h.sendOne(self.agent.register())
        request = self.agent.register(auth=challenge.challenge())
        first = self.h.sendOne(request)
        lookups = self.h.auth.lookups
        again = self.h.sendOne(request)
        self.assertEqual(first.data, again.data)
        self.assertEqual(self.h.auth.lookups, lookups)
        self.assertEqual([e.kind for e in self.h.events], ["registered"])

    def test_retransmission_after_timer_j_is_a_new_request(self) -> None:
        request = self.agent.register()
        self.h.sendOne(request)
        self.assertEqual(len(self.h.core.transactions.transactions), 1)
        self.h.clock.advance(33)
        self.assertEqual(len(self.h.core.transactions.transactions), 0)


class OtherRequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def options(self, uri: str = "sip:127.0.0.1", fromUser: str = "45675001") -> bytes:
        return (
            f"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-opt\r\n"
            f"From: <sip:{fromUser}@127.0.0.1>;tag=a\r\nTo: <{uri}>\r\nCall-ID: opt@test\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def test_options_to_the_server_lists_capabilities(self) -> None:
        reply = self.h.sendOne(self.options())
        self.assertEqual(reply.code, 200)
        self.assertIn("REGISTER", reply.get("allow") or "")
        self.assertEqual(reply.get("accept"), "application/sdp")
        self.assertEqual(reply.get("supported"), "path")

    def test_options_to_an_agents_own_number_is_a_keepalive(self) -> None:
        reply = self.h.sendOne(self.options("sip:45675001@127.0.0.1"))
        self.assertEqual(reply.code, 200)

    def test_request_to_a_number_is_proxied_and_needs_credentials(self) -> None:
        request = (
            b"SUBSCRIBE sip:45675002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-sub\r\n"
            b"From: <sip:45675001@127.0.0.1>;tag=a\r\nTo: <sip:45675002@127.0.0.1>\r\nCall-ID: sub@test\r\n"
            b"CSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        reply = self.h.sendOne(request)
        self.assertEqual(reply.code, 407)
        self.assertIn("Digest", reply.get("proxy-authenticate") or "")

    def test_bad_request_gets_400_with_a_reason(self) -> None:
        request = self.options().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        reply = self.h.sendOne(request)
        self.assertEqual(reply.code, 400)
        self.assertTrue(reply.reason)

    def test_garbage_is_dropped_and_the_service_keeps_answering(self) -> None:
        for junk in [b"", b"\x00" * 40, b"hello", b"INVITE", b"SIP/2.0 200 OK\r\n\r\n", bytes(range(256)) * 4]:
            self.assertEqual(self.h.send(junk), [])
        self.assertEqual(self.h.sendOne(self.options()).code, 200)

    def test_stray_responses_are_dropped(self) -> None:
        response = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n"
            b"To: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.h.send(response), [])


class AuthBackendTests(SynchronousTestCase):
    def test_a_backend_answering_later_is_waited_for(self) -> None:
        from twisted.internet.defer import Deferred

        class SlowAuth(FakeAuth):
            def credentials(self, number: str) -> Deferred:  # type: ignore[override]
                d: Deferred = Deferred()
                self.pending = (d, self.accounts.get(number))
                return d

        auth = SlowAuth({"45675001": "secret1"})
        h = Harness(auth=auth)
        agent = Agent("45675001", "secret1")
        challenge = h.sendOne(agent.register())
        self.assertEqual(h.send(agent.register(auth=challenge.challenge())), [])
        d, credentials = auth.pending
        d.callback(credentials)
        self.assertEqual(len(h.location.lookup("45675001")), 1)


class TortureApplicationTests(SynchronousTestCase):
    """
    What RFC 4475 asks of the application once the parser accepted a
    message (tests.test_sip_torture checks the parser's part).
    """

    def setUp(self) -> None:
        self.h = Harness()

    def message(self, name: str) -> bytes:
        import os

        with open(os.path.join(os.path.dirname(__file__), "torture", f"{name}.dat"), "rb") as f:
            return f.read()

    def test_unksm2_register_to_a_non_sip_aor_gets_400(self) -> None:
        self.assertEqual(self.h.sendOne(self.message("unksm2")).code, 400)

    def test_unkscm_unknown_request_uri_scheme_gets_416(self) -> None:
        self.assertEqual(self.h.sendOne(self.message("unkscm")).code, 416)

    def test_unknown_methods_are_proxied_to_numbers_and_501_for_the_server(self) -> None:
        # RFC 4475 intmeth: an unknown method for a user, proxied (RFC 3261
        # 16.3 step 1): challenged when its domain is served here.
        self.assertEqual(self.h.sendOne(self.message("intmeth")).code, 403)
        self.assertEqual(Harness(sip__domains=["example.com"]).sendOne(self.message("intmeth")).code, 407)
        unknown = (
            b"FOO sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-foo\r\n"
            b"From: <sip:45675001@127.0.0.1>;tag=a\r\nTo: <sip:127.0.0.1>\r\nCall-ID: foo@test\r\n"
            b"CSeq: 1 FOO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.h.sendOne(unknown).code, 501)
        self.assertEqual(
            self.h.sendOne(
                b"INFO sip:45675002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-info\r\n"
                b"From: <sip:45675001@127.0.0.1>;tag=a\r\nTo: <sip:45675002@127.0.0.1>\r\nCall-ID: info@test\r\n"
                b"CSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).code,
            407,
        )

    def test_regaut01_unknown_authorization_scheme_is_challenged(self) -> None:
        h = Harness(sip__domains=["example.com"])
        self.assertEqual(h.sendOne(self.message("regaut01")).code, 401)

    def test_badbranch_bare_magic_cookie_is_not_a_unique_branch(self) -> None:
        first = self.message("badbranch")
        other = first.replace(b"Call-ID: badbranch.", b"Call-ID: other.")
        self.assertEqual(len(self.h.send(first)), 1)
        # Same bare branch, another request: a new transaction, not a retransmission.
        self.assertEqual(len(self.h.send(other)), 1)
