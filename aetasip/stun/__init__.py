"""
The STUN server: RFC 8489 Binding over UDP and TCP, IPv4 and IPv6, with
RFC 5780 NAT behaviour discovery and classic RFC 3489 clients.

    - L{aetasip.stun.codec}: the sans-IO message codec;
    - L{aetasip.stun.server}: sans-IO request handling, rate limit, counters;
    - L{aetasip.stun.service}: L{STUNService}, the Twisted service.
"""

from __future__ import annotations

from aetasip.stun.service import STUNService

__all__ = ["STUNService"]
