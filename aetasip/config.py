"""
The configuration: every key, its default, and how it is checked.

A configuration file is Python; each section is a dict assigned to a
top-level name::

    sip = {"domains": ["sip.example.net"], "udp_ports": [5060, 5070]}
    store = {"url": "postgresql://aetasip@db/aetasip"}

Keys are named ``section.key`` in errors and in ``tap-config.py``, which
documents them all. Unknown sections or keys are errors: a typo must not be
silently ignored.

Each module declares the keys it reads, next to its code, when it is
imported: L{declare} adds L{Key}s, L{declareCheck} a check of several keys
together. This module imports the declaring modules itself on the first
use of the keys (L{build}, L{load}, L{readFile}, L{sections}, L{keys}),
whatever was imported before:

    - aetasip's own: one line each in L{MODULES};
    - a third-party plugin's: a Twisted plugin providing L{IConfigModule}
      names the module. Next to the plugin's other files, on C{sys.path}::

        # example_settings.py
        from aetasip.config import Key, declare, integer

        declare(Key("example.timeout", 5, integer(1, 60), "Seconds ..."))

        # twisted/plugins/example_config.py
        from aetasip.config import ConfigModule

        exampleSettings = ConfigModule("example_settings")

      The configuration file then takes a section C{example = {...}} and the
      plugin reads C{config["example.timeout"]}. Document the keys where the
      plugin is documented: C{tap-config.py} covers aetasip's own.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import runpy
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface, implementer


class ConfigError(Exception):
    """
    A configuration value is wrong. C{str()} is the one line shown to the
    operator: key, value and what was expected.
    """

    def __init__(self, key: str, value: object, expected: str) -> None:
        super().__init__(key, value, expected)
        self.key = key
        self.value = value
        self.expected = expected

    def __str__(self) -> str:
        shown = redacted(self.key, self.value)
        if self.key.startswith("-"):
            return f"{self.key} {shown}: expected {self.expected}"
        return f"configuration key {self.key} = {shown}: expected {self.expected}"


# Names of settings (keys, options, dict entries) whose values are secrets.
_SECRET_NAME = re.compile(r"secret|password|passwd|token|dialog_key|api_key|private", re.I)
# The password of a URL: scheme://user:PASSWORD@host...
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*?:)([^@/\s]*)(@)")


def redacted(name: str, value: object) -> str:
    """
    The C{repr} of the setting C{name} = C{value} for messages and logs,
    secrets hidden: the whole value of a secret setting (a name with
    C{secret}, C{password}, C{token}...), the passwords of URLs, and secret
    entries of dicts, at any depth.
    """
    if value is not None and _SECRET_NAME.search(name):
        return "'<hidden>'"
    return _URL_PASSWORD.sub(r"\1***\3", repr(_hideEntries(value)))


def _hideEntries(value: object) -> object:
    if isinstance(value, dict):
        return {
            k: ("<hidden>" if isinstance(k, str) and _SECRET_NAME.search(k) and v is not None else _hideEntries(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_hideEntries(v) for v in value)
    return value


class _Invalid(Exception):
    """Raised by a checker with the description of what it expected."""


Invalid = _Invalid
"""What a checker declared in another module raises: C{Invalid("what was expected")}."""


Checker = Callable[[Any], Any]


# -- checkers ------------------------------------------------------------------


def _expect(expected: str) -> _Invalid:
    return _Invalid(expected)


def integer(low: int, high: int) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _expect(f"a whole number from {low} to {high}")
        return value

    return check


def number(low: float, high: float) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise _expect(f"a number from {low} to {high}")
        return float(value)

    return check


def port(value: Any) -> int:
    return integer(0, 65535)(value)  # type: ignore[no-any-return]


def optional(check: Checker) -> Checker:
    def checkOptional(value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except _Invalid as e:
            raise _expect(f"None or {e.args[0]}") from None

    return checkOptional


def listOf(check: Checker, what: str, allowEmpty: bool = True) -> Checker:
    expected = f"a list of {what}" if allowEmpty else f"a non-empty list of {what}"

    def checkList(value: Any) -> list[Any]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise _expect(expected)
        items = list(value)
        if not items and not allowEmpty:
            raise _expect(expected)
        try:
            return [check(item) for item in items]
        except _Invalid:
            raise _expect(expected) from None

    return checkList


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _expect("True or False")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise _expect("a non-empty string")
    return value


def shortText(maxLength: int) -> Checker:
    """Text of 1 to C{maxLength} characters."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= maxLength:
            raise _expect(f"a string of 1 to {maxLength} characters")
        return value

    return check


def matching(pattern: re.Pattern[str], expected: str) -> Checker:
    """Text that C{pattern} matches in full; C{expected} says what it is."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise _expect(expected)
        return value

    return check


def choice(*choices: str) -> Checker:
    def check(value: Any) -> str:
        if value not in choices:
            raise _expect("one of " + ", ".join(repr(c) for c in choices))
        return value  # type: ignore[no-any-return]

    return check


def ipAddress(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (ValueError, TypeError):
        raise _expect("an IPv4 or IPv6 address") from None


def network(value: Any) -> str:
    """An IP network (C{192.0.2.0/24}, C{2001:db8::/32}) or address (a /32 or /128)."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except (ValueError, TypeError):
        raise _expect("an IP network or address") from None


def hostname(value: Any) -> str:
    """A DNS name or an IP address, lower-cased."""
    if not isinstance(value, str) or not value:
        raise _expect("a host name or IP address")
    host = value.strip("[]").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(
        0 < len(label) < 64 and all(c.isalnum() or c == "-" for c in label) and not label.startswith("-")
        for label in labels
    ):
        raise _expect("a host name or IP address")
    return host.rstrip(".")


def dictOfDicts(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        raise _expect("a dict of names to dicts of their settings")
    return value


def storeURL(value: Any) -> str:
    if not isinstance(value, str) or not (
        value.startswith("sqlite:///") or value.startswith("postgresql://") or value == "sqlite://"
    ):
        raise _expect("sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    return value


def readableFile(value: Any) -> str:
    if not isinstance(value, str) or not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise _expect("the path of a readable file")
    return value


# -- the keys ------------------------------------------------------------------


@attrs.frozen
class Key:
    """One configuration key: dotted name, default, checker, documentation."""

    name: str
    default: Any
    check: Checker
    doc: str


CrossCheck = Callable[[Mapping[str, Any]], None]
"""
A check of several keys together, given every value by dotted name; it
raises L{ConfigError} naming the key to change.
"""


MODULES: tuple[str, ...] = (
    # The modules of aetasip that declare keys: one line each, imported on
    # first use of the registry (see L{keys}).
    "aetasip.auth.chain",
    "aetasip.auth.limits",
    "aetasip.auth.ldapsettings",
    "aetasip.calls.settings",
    "aetasip.cluster.settings",
    "aetasip.element.flood",
    "aetasip.notify",
    "aetasip.records.mailsettings",
    "aetasip.records.settings",
    "aetasip.registrar",
    "aetasip.sipservice",
    "aetasip.store.service",
    "aetasip.routing.chain",
    "aetasip.stun.service",
    "aetasip.relay.settings",
    "aetasip.web.settings",
    "aetasip.web.portalsettings",
    "aetasip.testline.settings",
)


class IConfigModule(Interface):
    """
    A Twisted plugin naming a module that declares configuration keys: how
    a third-party plugin adds its own section. See the module docstring.
    """

    module = Attribute("Dotted name of the module, importable from sys.path, whose import calls L{declare}.")


@implementer(IPlugin, IConfigModule)
@attrs.frozen
class ConfigModule:
    """
    The L{IConfigModule} plugin of a third-party module that declares keys:
    C{ConfigModule("example_settings")} in a C{twisted/plugins/} file.
    """

    module: str


@attrs.define
class _Registry:
    """
    Every declared key and cross-key check, and whether the declaring
    modules (L{MODULES} and L{IConfigModule} plugins) have been imported.
    """

    keys: dict[str, Key] = attrs.Factory(dict)
    checks: list[CrossCheck] = attrs.Factory(list)
    loaded: bool = False

    def copy(self) -> _Registry:
        return _Registry(dict(self.keys), list(self.checks), self.loaded)


_registry = _Registry()


def declare(*keys: Key) -> None:
    """
    Add C{keys} to the configuration. The module that uses a section
    declares it, when it is imported; for the file to be checked against
    them it must also be listed in L{MODULES} or named by an
    L{IConfigModule} plugin.

    @raise ValueError: a programming error: a name that is not
        C{section.key} (both Python identifiers, the section not starting
        with C{_}), a name already declared, or a default its checker
        refuses. Nothing is declared then.
    """
    names = [key.name for key in keys]
    for key in keys:
        section, dot, name = key.name.partition(".")
        if not (dot and section.isidentifier() and name.isidentifier() and not section.startswith("_")):
            raise ValueError(f"configuration key {key.name!r}: a name must be section.key")
        if key.name in _registry.keys or names.count(key.name) > 1:
            raise ValueError(f"configuration key {key.name} is declared twice")
        try:
            key.check(key.default)
        except _Invalid as e:
            raise ValueError(f"configuration key {key.name}: default {key.default!r}: expected {e.args[0]}") from None
    _registry.keys.update((key.name, key) for key in keys)


def declareCheck(check: CrossCheck) -> None:
    """
    Run C{check} on every configuration L{build} makes, after each value
    was checked alone, in the order of declaration: for a rule between
    keys (a minimum at most a maximum), declared by their owner.
    """
    _registry.checks.append(check)


def _loaded() -> _Registry:
    """
    The registry, once every module that declares keys has been imported.

    The modules are imported here, on first use, not at the top of this
    module: they import this one for L{Key}, L{declare} and the checkers.
    """
    registry = _registry
    if not registry.loaded:
        for name in MODULES:
            importlib.import_module(name)
        # Scanning reads the plugins' cache: only the modules providing
        # IConfigModule are imported.
        from twisted.plugin import getPlugins

        import twisted.plugins

        for plugin in getPlugins(IConfigModule, twisted.plugins):
            importlib.import_module(plugin.module)
        # Set last: a declaring module that reads the keys while it is
        # imported comes back here rather than getting a partial registry,
        # and a failed import is tried again on the next use.
        registry.loaded = True
    return registry


def keys() -> Mapping[str, Key]:
    """Every declared key, by dotted name (read-only)."""
    return MappingProxyType(_loaded().keys)


def __getattr__(name: str) -> Mapping[str, Key]:
    # config.KEYS, the table of every key before keys were declared by
    # their modules, still reads: the registry is filled on first use.
    if name == "KEYS":
        return keys()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sections() -> list[str]:
    return sorted({name.split(".", 1)[0] for name in keys()})


# -- configurations ------------------------------------------------------------


@attrs.frozen
class Config:
    """
    A complete, checked configuration. Read values with C{config["sip.realm"]}.
    """

    values: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def section(self, name: str) -> dict[str, Any]:
        prefix = name + "."
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}

    def replace(self, **changes: Any) -> Config:
        """
        A copy with some keys changed (C{sip__realm="x"} for C{sip.realm}),
        checked like a file.
        """
        return build({k.replace("__", "."): v for k, v in changes.items()}, base=self.values)


def build(settings: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> Config:
    """
    Check C{settings} (dotted names to values) over C{base} (or the
    defaults) and return the resulting L{Config}.

    @raise ConfigError: for an unknown key, a bad value, or values a
        declared cross-key check refuses.
    """
    registry = _loaded()
    values = dict(base) if base is not None else {k.name: k.default for k in registry.keys.values()}
    for name, value in settings.items():
        key = registry.keys.get(name)
        if key is None:
            raise ConfigError(name, value, "a known key (see tap-config.py)")
        try:
            values[name] = key.check(value)
        except _Invalid as e:
            raise ConfigError(name, value, e.args[0]) from None
    for check in registry.checks:
        check(values)
    return Config(values)


def readFile(path: str) -> dict[str, Any]:
    """
    Run the Python configuration file C{path}; return its settings as
    dotted names.

    @raise ConfigError: when the file cannot be read or run, or assigns a
        section that is not a dict.
    """
    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ConfigError("--config", path, "the path of a readable configuration file") from None
    except SyntaxError as e:
        raise ConfigError("--config", path, f"valid Python (line {e.lineno}: {e.msg})") from None
    except Exception as e:  # the file is the operator's code: report, never trace back
        raise ConfigError("--config", path, f"a file that runs ({type(e).__name__}: {e})") from None
    known = set(sections())
    settings: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or callable(value) or type(value).__name__ == "module":
            continue
        if name not in known:
            raise ConfigError(name, value, "a known section: " + ", ".join(sorted(known)))
        if not isinstance(value, dict):
            raise ConfigError(name, value, "a dict of keys for this section")
        for key, item in value.items():
            settings[f"{name}.{key}"] = item
    return settings


def load(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """
    The configuration from the embedded defaults, then the file C{path},
    then C{overrides} (from the command line).
    """
    settings: dict[str, Any] = {}
    if path is not None:
        settings.update(readFile(path))
    settings.update(overrides or {})
    return build(settings)
