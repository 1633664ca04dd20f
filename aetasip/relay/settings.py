"""
The C{relay} section of the configuration: when calls are relayed
(C{relay.mode}, overridden per group and per account in the store), the
relay nodes, which node the caller's registrar domain picks, and the
media timeout.

Nodes are named; each has a C{kind}: C{builtin} (this process,
L{aetasip.relay.builtin}) or C{rtpengine} (rtpengine daemons reached over
their ng protocol, L{aetasip.relay.rtpengine}), both in L{NODE_KINDS}.
The options of each kind are checked at start-up, so a bad
node stops the start with one line naming C{relay.nodes.NAME.OPTION}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.python.reflect import namedAny

from aetasip import net
from aetasip.config import ConfigError, Key, _Invalid, choice, declare, declareCheck, dictOfDicts, number, text
from aetasip.store.models import RELAY_MODES

MODES = RELAY_MODES
"""When a leg is relayed: C{auto} (when it needs it), C{always}, C{never}."""

DEFAULT_PORTS = (55004, 55999)


def _domains(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise _Invalid("a dict of domain names to node names")
    return {k.lower(): v for k, v in value.items()}


declare(
    Key(
        "relay.mode",
        "auto",
        choice(*MODES),
        "When a call's media goes through the relay (calls.media_handler = 'relay'): 'auto' when a leg needs it "
        "(its SDP or Contact address is not the address its signalling comes from: NAT, a private address, STUN "
        "not used), 'always', or 'never'. A group's or an account's own setting (aetasip-admin) wins over this; a "
        "call is relayed when either leg's decision says so.",
    ),
    Key(
        "relay.nodes",
        {"local": {"kind": "builtin"}},
        dictOfDicts,
        "The relay nodes by name, each a dict with its 'kind' and options. 'builtin' (this process): 'address' "
        "(bound; default '0.0.0.0'), 'advertise' (written in SDP; default: 'address', else the first specific "
        "address of sip.listen), 'ports' ([low, high], default [55004, 55999]: even RTP / odd RTCP pairs). "
        "'rtpengine' (media through rtpengine daemons): 'ng' (the ng control addresses of its daemons, "
        "'IP:PORT' or '[IPv6]:PORT', new calls spread over those that answer), 'timeout' (seconds before a "
        "request is sent again; default 1.0), 'retries' (before a daemon is marked down; default 2), "
        "'recheck_interval' (seconds between the pings of a daemon marked down; default 10), 'max_pending' "
        "(requests waiting at once, past which calls get 503; default 1000).",
    ),
    Key(
        "relay.default_node",
        "local",
        text,
        "The node relaying calls whose caller's registrar domain is not in relay.domains.",
    ),
    Key(
        "relay.domains",
        {},
        lambda value: _domains(value),
        "Registrar domain -> node name: a call is relayed by the node of the domain its caller registered with "
        "(e.g. {'sip.aeta-audio.fr': 'fr'}); the callee's domain has no influence.",
    ),
    Key(
        "relay.media_timeout",
        60,
        number(0, 86400),
        "Seconds without a media packet (RTP or RTCP) from a party that is to send (it declared sendrecv or "
        "sendonly towards a party that receives) after which an answered relayed call is released (BYE to both, "
        "end cause 'media timeout'); a call where nobody is to send (a=inactive, c=0.0.0.0) is not; 0: never.",
    ),
)


@attrs.frozen
class BuiltinOptions:
    """The checked options of a C{builtin} node."""

    address: str
    advertise: str
    ports: tuple[int, int]


def builtinOptions(name: str, options: Mapping[str, Any], values: Mapping[str, Any]) -> BuiltinOptions:
    """
    @raise ConfigError: naming C{relay.nodes.NAME.OPTION}.
    """
    where = f"relay.nodes.{name}"
    unknown = set(options) - {"kind", "address", "advertise", "ports"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{where}.{key}", options[key], "one of the builtin node's options: address, advertise, ports"
        )
    address = options.get("address", "0.0.0.0")
    try:
        address = str(ipaddress.ip_address(address))
    except (ValueError, TypeError):
        raise ConfigError(f"{where}.address", address, "an IPv4 or IPv6 address") from None
    advertise = options.get("advertise")
    if advertise is None:
        if address not in net.WILDCARDS:
            advertise = address
        else:
            family = ipaddress.ip_address(address).version
            specific = [
                a
                for a in values.get("sip.listen", [])
                if a not in net.WILDCARDS and ipaddress.ip_address(a).version == family
            ]
            if not specific:
                raise ConfigError(
                    f"{where}.advertise", None, "the address to write in SDP (the node binds a wildcard address)"
                )
            advertise = specific[0]
    try:
        advertised = ipaddress.ip_address(advertise)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}.advertise", advertise, "an IPv4 or IPv6 address") from None
    if advertised.is_unspecified or advertised.version != ipaddress.ip_address(address).version:
        raise ConfigError(f"{where}.advertise", advertise, f"a specific address of the same family as {address}")
    ports = options.get("ports", list(DEFAULT_PORTS))
    if (
        not isinstance(ports, (list, tuple))
        or len(ports) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
        or not 1024 <= ports[0] < ports[1] <= 65535
        or ports[1] - ports[0] < 3
    ):
        raise ConfigError(f"{where}.ports", ports, "[low, high]: two port numbers from 1024 to 65535, low < high - 2")
    return BuiltinOptions(address, str(advertised), (ports[0], ports[1]))


@attrs.frozen
class RtpengineOptions:
    """The checked options of an C{rtpengine} node."""

    ng: tuple[tuple[str, int], ...]
    timeout: float
    retries: int
    recheckInterval: float
    maxPending: int
    keepalive: float = 30.0


_RTPENGINE_TUNING: dict[str, tuple[str, type, float, float, float]] = {
    # option: (attribute, type, default, lowest, highest)
    "timeout": ("timeout", float, 1.0, 0.05, 30.0),
    "retries": ("retries", int, 2, 0, 10),
    "recheck_interval": ("recheckInterval", float, 10.0, 0.1, 3600.0),
    "max_pending": ("maxPending", int, 1000, 1, 100_000),
    "keepalive": ("keepalive", float, 30.0, 0.0, 3600.0),
}


def rtpengineOptions(name: str, options: Mapping[str, Any], values: Mapping[str, Any]) -> RtpengineOptions:
    """
    @raise ConfigError: naming C{relay.nodes.NAME.OPTION}.
    """
    from aetasip.relay.ng import parseAddress

    where = f"relay.nodes.{name}"
    unknown = set(options) - {"kind", "ng", *_RTPENGINE_TUNING}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{where}.{key}", options[key], "one of the rtpengine node's options: ng, " + ", ".join(_RTPENGINE_TUNING)
        )
    addresses = options.get("ng")
    expected = "a list of the ng addresses of its rtpengine daemons, like ['127.0.0.1:2223'], without repeats"
    if not isinstance(addresses, (list, tuple)) or not addresses:
        raise ConfigError(f"{where}.ng", addresses, expected)
    try:
        ng = tuple(parseAddress(a) for a in addresses)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.ng", addresses, expected) from None
    if len(set(ng)) != len(ng):
        raise ConfigError(f"{where}.ng", addresses, expected)
    tuning: dict[str, Any] = {}
    for option, (attribute, kind, default, low, high) in _RTPENGINE_TUNING.items():
        value = options.get(option, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not isinstance(value, int))
            or not low <= value <= high
        ):
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{where}.{option}", value, f"{what} from {low:g} to {high:g}")
        tuning[attribute] = kind(value)
    return RtpengineOptions(ng, **tuning)


@attrs.frozen
class NodeKind:
    """
    A kind of relay node: C{check(name, options, values)} raises
    L{ConfigError} for bad options; C{maker} is the dotted name of
    C{make(name, options, config, reactor)}, returning the L{IRelay}
    (imported only when a node of the kind is made).
    """

    check: Callable[[str, Mapping[str, Any], Mapping[str, Any]], object]
    maker: str


NODE_KINDS: dict[str, NodeKind] = {
    "builtin": NodeKind(builtinOptions, "aetasip.relay.builtin.makeNode"),
    "rtpengine": NodeKind(rtpengineOptions, "aetasip.relay.rtpengine.makeNode"),
}
"""The node kinds by the name C{relay.nodes.NAME.kind} gives."""


def makeNode(name: str, config: Any, reactor: Any) -> Any:
    """The L{IRelay} node C{name} of C{relay.nodes}, as its kind makes it."""
    options = config["relay.nodes"][name]
    return namedAny(NODE_KINDS[options["kind"]].maker)(name, options, config, reactor)


def _checkRelay(values: Mapping[str, Any]) -> None:
    if values.get("calls.media_handler") != "relay":
        return  # the relay is not used: its nodes are not built
    nodes = values["relay.nodes"]
    if not nodes:
        raise ConfigError("relay.nodes", nodes, "at least one node")
    for name, options in nodes.items():
        kind = options.get("kind")
        if kind not in NODE_KINDS:
            raise ConfigError(f"relay.nodes.{name}.kind", kind, "one of " + ", ".join(repr(k) for k in NODE_KINDS))
        NODE_KINDS[kind].check(name, options, values)
    if values["relay.default_node"] not in nodes:
        raise ConfigError("relay.default_node", values["relay.default_node"], "the name of a node of relay.nodes")
    for domain, node in values["relay.domains"].items():
        if node not in nodes:
            raise ConfigError(f"relay.domains.{domain}", node, "the name of a node of relay.nodes")


declareCheck(_checkRelay)
