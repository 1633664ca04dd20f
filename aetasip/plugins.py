"""
Named Twisted plugins chosen by the configuration: authentication
backends and routing policies are both found this way.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.plugin import getPlugins

import twisted.plugins
from aetasip.config import ConfigError

log = Logger()


def namedPlugins(interface: Any, what: str) -> dict[str, Any]:
    """
    The plugins providing C{interface} (in any C{twisted/plugins/}
    directory on C{sys.path}), by their C{name}; when two share a name the
    first found is kept and the other logged.

    @param what: what they are, for the log ("routing policies").
    """
    found: dict[str, Any] = {}
    plugin: Any
    for plugin in getPlugins(interface, twisted.plugins):
        if plugin.name in found:
            log.warn("Two {what} are named {name}; ignoring {plugin!r}", what=what, name=plugin.name, plugin=plugin)
            continue
        found[plugin.name] = plugin
    return found


def chosen(key: str, names: list[str], available: dict[str, Any]) -> list[Any]:
    """
    The plugins the configuration key C{key} names, in its order.

    @raise ConfigError: for an unknown or repeated name.
    """
    plugins = []
    for name in names:
        if name not in available:
            raise ConfigError(key, name, "one of: " + ", ".join(sorted(available)))
        if names.count(name) > 1:
            raise ConfigError(key, names, f"a list naming {name!r} once")
        plugins.append(available[name])
    return plugins
