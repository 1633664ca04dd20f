"""
The C{web} section of the configuration: where the web service listens,
its TLS certificate, the admin API's bearer tokens, and the control
socket through which C{aetasip-admin} reaches the running service.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
from typing import Any

import attrs

from aetasip.config import Config, Invalid, Key, declare, listOf, optional, readableFile


@attrs.frozen
class ListenAddress:
    """
    A host and a TCP port to listen on.

    @ivar host: an IPv4 or IPv6 address.
    @ivar port: the port; 0 picks a free one (tests).
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parseListen(value: Any) -> ListenAddress:
    """
    C{"127.0.0.1:8080"} or C{"[::1]:8080"} as a L{ListenAddress}.

    @raise Invalid: for anything else.
    """
    expected = "ADDRESS:PORT, e.g. '127.0.0.1:8080' or '[::1]:8080'"
    if not isinstance(value, str):
        raise Invalid(expected)
    host, sep, portText = value.rpartition(":")
    if not sep or not portText.isdigit() or not 0 <= int(portText) <= 65535:
        raise Invalid(expected)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise Invalid(expected)
    elif ":" in host:
        raise Invalid(expected)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise Invalid(expected) from None
    return ListenAddress(address, int(portText))


def _listen(value: Any) -> str:
    return str(parseListen(value))


MIN_TOKEN_LENGTH = 32


def _token(value: Any) -> str:
    if not isinstance(value, str) or len(value) < MIN_TOKEN_LENGTH or not value.isprintable() or " " in value:
        raise Invalid(f"a token of at least {MIN_TOKEN_LENGTH} printable characters without spaces")
    return value


MAX_SOCKET_PATH = 107
"""The longest UNIX socket path, in bytes (C{sun_path} holds 108 with its NUL)."""


def _socketPath(value: Any) -> str:
    expected = f"the path of a UNIX socket, at most {MAX_SOCKET_PATH} bytes"
    if not isinstance(value, str) or not value or "\0" in value or value.endswith("/"):
        raise Invalid(expected)
    if len(os.fsencode(value)) > MAX_SOCKET_PATH:
        raise Invalid(expected)
    return value


declare(
    Key(
        "web.listen",
        "127.0.0.1:8080",
        optional(_listen),
        "Address and TCP port of the web service (health check, metrics, admin API): '127.0.0.1:8080', "
        "'[::1]:8080'. None: no web service. It serves HTTPS when web.tls_certificate is set.",
    ),
    Key(
        "web.admin_listen",
        None,
        optional(_listen),
        "Address and TCP port of the admin API's own listener, e.g. on a management network: '10.0.0.5:8443', "
        "'[::1]:8443'. When set, the admin API (/api/v1/) is served there only, no longer on web.listen (which "
        "keeps the portal, /health and /metrics); HTTPS with web.tls_certificate when that is set; the same "
        "bearer tokens. None: the admin API is served on web.listen.",
    ),
    Key(
        "web.tls_certificate",
        None,
        optional(readableFile),
        "PEM file of the web service's certificate (and its key, unless web.tls_key is set): HTTPS instead of "
        "HTTP. None: plain HTTP, fit only for loopback or behind a TLS reverse proxy.",
    ),
    Key(
        "web.tls_key",
        None,
        optional(readableFile),
        "PEM file of the private key of web.tls_certificate, when it is not in the certificate's file.",
    ),
    Key(
        "web.admin_tokens",
        [],
        listOf(_token, f"tokens of at least {MIN_TOKEN_LENGTH} printable characters"),
        "Bearer tokens of the admin API (Authorization: Bearer TOKEN), e.g. from 'openssl rand -hex 32'. Kept "
        "in memory only as SHA-256 digests. Tokens of the store ('aetasip-admin token add NAME') are accepted too. "
        "Neither: the admin API refuses every request (401).",
    ),
    Key(
        "web.control_socket",
        "aetasip.sock",
        optional(_socketPath),
        "UNIX socket on which the admin API is also served, without a token: aetasip-admin reaches the running "
        "service through it (calls, relay and test-line sessions, registrations). Created readable and writable "
        "by the service's user only (mode 0600): filesystem permissions are the authorization. A relative path is "
        "relative to the working directory, like the default store. None: no control socket.",
    ),
)


def generateToken() -> str:
    """A new random bearer token: 256 bits, 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


def tokenDigest(token: str) -> bytes:
    """The SHA-256 digest a bearer token is kept and compared as."""
    return hashlib.sha256(token.encode()).digest()


@attrs.frozen
class WebSettings:
    """
    The C{web} section, checked.

    @ivar listen: where to listen, or C{None} for no web service.
    @ivar certificate: the PEM certificate file, or C{None} for plain HTTP.
    @ivar key: the PEM key file (the certificate's file when not set).
    @ivar tokenDigests: the digests of the admin API's bearer tokens.
    @ivar controlSocket: the control socket's path, or C{None}.
    @ivar adminListen: the admin API's own listen address, or C{None}
        (served on C{listen} then).
    """

    listen: ListenAddress | None
    certificate: str | None
    key: str | None
    tokenDigests: tuple[bytes, ...]
    controlSocket: str | None = None
    adminListen: ListenAddress | None = None

    @classmethod
    def fromConfig(cls, config: Config) -> WebSettings:
        listen = config["web.listen"]
        adminListen = config["web.admin_listen"]
        return cls(
            None if listen is None else parseListen(listen),
            config["web.tls_certificate"],
            config["web.tls_key"],
            tuple(tokenDigest(t) for t in config["web.admin_tokens"]),
            config["web.control_socket"],
            None if adminListen is None else parseListen(adminListen),
        )
