"""
The command-line options of C{twistd aetasip} (L{Options}), and the
configuration they make with the file they name.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from aetasip import config


class Options(usage.Options):
    """
    C{twistd aetasip} options. Every value also has a configuration key;
    the command line wins over the file.
    """

    synopsis = "[--config FILE] [--listen ADDRESS]... [--domain NAME]... [--store URL]"
    longdesc = (
        "Runs the aetasip SIP service. With no option it runs on its embedded defaults: "
        "SIP on UDP and TCP ports 5060 and 5070 of every address, STUN on 3478, the store "
        "in ./aetasip.db. See tap-config.py for every configuration key."
    )
    optParameters = [
        ["config", "c", None, "Python configuration file (see tap-config.py)."],
        ["store", None, None, "Store URL (store.url): sqlite:///PATH or postgresql://…"],
        ["realm", None, None, "Digest realm (sip.realm)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.overrides: dict[str, Any] = {}
        self["listen"] = []
        self["domain"] = []
        self["sip-port"] = []

    def opt_listen(self, address: str) -> None:
        """Listen on this address (sip.listen); repeat for several."""
        self["listen"].append(address)

    def opt_domain(self, name: str) -> None:
        """Also answer for this domain name or address (sip.domains); repeat for several."""
        self["domain"].append(name)

    def opt_sip_port(self, port: str) -> None:
        """SIP port for UDP and TCP (sip.udp_ports and sip.tcp_ports); repeat for several."""
        try:
            self["sip-port"].append(int(port))
        except ValueError:
            raise usage.UsageError(f"--sip-port {port!r}: expected a port number") from None

    def postOptions(self) -> None:
        overrides: dict[str, Any] = {}
        if self["listen"]:
            overrides["sip.listen"] = self["listen"]
        if self["sip-port"]:
            overrides["sip.udp_ports"] = overrides["sip.tcp_ports"] = self["sip-port"]
        if self["store"] is not None:
            overrides["store.url"] = self["store"]
        if self["realm"] is not None:
            overrides["sip.realm"] = self["realm"]
        self.overrides = overrides

    def loadConfig(self) -> config.Config:
        """
        The configuration: defaults, then the file, then the command line.

        @raise config.ConfigError: for a bad file, key or value.
        """
        loaded = config.load(self["config"], {})
        overrides = dict(self.overrides)
        if self["domain"]:
            overrides["sip.domains"] = [*loaded["sip.domains"], *self["domain"]]
        return loaded.replace(**{k.replace(".", "__"): v for k, v in overrides.items()})
