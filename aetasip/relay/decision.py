"""
Whether a leg of a call is relayed, and why (sans-IO).

The mode of a leg is its account's relay setting, else its group's, else
C{relay.mode}. In C{auto} a leg is relayed when it looks behind NAT: its
SDP connection address, or the host of its Contact, is not the address
its signalling comes from (a private address, an agent without STUN, a
symmetric NAT whose public port differs from the one STUN found). An
agent whose SDP and Contact carry the public address it is seen from
(STUN used correctly) keeps direct media. C{always} relays the leg, and
C{never} never relays it because of itself.

A leg that looks behind NAT is latched from its signalling source host
(L{aetasip.interfaces.IRelay}'s C{latchAnySource}), whatever the mode.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from aetasip.routing import Directory
from aetasip.sip.headers import parseNameAddr
from aetasip.sip.uri import parseURI


@attrs.frozen
class LegDecision:
    """
    The decision on one leg.

    @ivar relay: the leg asks for the relay.
    @ivar nat: the leg looks behind NAT (latch from its signalling host).
    @ivar mode: C{auto}, C{always} or C{never}; C{modeFrom} says whose
        setting it is (C{account N}, C{group P}, C{configuration}).
    @ivar reason: one sentence for logs and the call record.
    """

    relay: bool
    nat: bool
    mode: str
    modeFrom: str
    reason: str

    def describe(self) -> dict[str, object]:
        return {
            "relay": self.relay,
            "nat": self.nat,
            "mode": self.mode,
            "mode_from": self.modeFrom,
            "reason": self.reason,
        }


def modeOf(number: str | None, directory: Directory, default: str) -> tuple[str, str]:
    """The relay mode of the account C{number} and whose setting it is."""
    account = directory.account(number) if number else None
    if account is not None:
        if account.relay:
            return account.relay, f"account {number}"
        if account.group is not None:
            group = directory.group(account.group)
            if group is not None and group.relay:
                return group.relay, f"group {account.group}"
    return default, "configuration"


def natEvidence(source: tuple[str, int], transport: str, mediaHosts: Iterable[str], contact: str | None) -> str | None:
    """
    Why a leg whose signalling comes from C{source} looks behind NAT, or
    C{None} when its media and Contact addresses are the one it is seen
    from.

    @param mediaHosts: the connection addresses of its active media
        (unspecified ones, a hold, are skipped).
    """
    seen = _ip(source[0])
    for host in mediaHosts:
        ip = _ip(host)
        if ip is None:
            return f"its SDP names the host {host!r}, not an address"
        if ip.is_unspecified:
            continue
        if ip != seen:
            kind = "private address" if ip.is_private else "address"
            return f"its SDP advertises the {kind} {host}, it signals from {source[0]}"
    if contact:
        try:
            uri = parseNameAddr(contact).uri if "<" in contact else parseURI(contact)
        except Exception:
            return "its Contact cannot be read"
        ip = _ip(uri.host)
        if ip is None or ip != seen:
            return f"its Contact names {uri.host}, it signals from {source[0]}"
        port = uri.port or (5061 if uri.scheme == "sips" else 5060)
        if transport == "udp" and port != source[1]:
            return f"its Contact names port {port}, it signals from port {source[1]} (symmetric NAT)"
    return None


def decideLeg(mode: str, modeFrom: str, evidence: str | None) -> LegDecision:
    """The decision on a leg of C{mode} with the NAT C{evidence} (see L{natEvidence})."""
    nat = evidence is not None
    if mode == "never":
        return LegDecision(False, nat, mode, modeFrom, f"relay never ({modeFrom})")
    if mode == "always":
        why = f"relay always ({modeFrom})" + (f"; {evidence}" if nat else "")
        return LegDecision(True, nat, mode, modeFrom, why)
    if nat:
        return LegDecision(True, True, mode, modeFrom, f"behind NAT: {evidence}")
    return LegDecision(False, False, mode, modeFrom, "direct media: its addresses are the one it signals from")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
