"""
The C{mail} section of the configuration: the SMTP server the outbox
sends through (STARTTLS and authentication), the From address, and the
outbox's retries.
"""

from __future__ import annotations

from typing import Any

import attrs

from aetasip.config import (
    ConfigError,
    Key,
    boolean,
    declare,
    declareCheck,
    hostname,
    integer,
    matching,
    number,
    optional,
    port,
    readableFile,
    text,
)
from aetasip.store.models import EMAIL_PATTERN

declare(
    Key(
        "mail.smtp_host",
        None,
        optional(hostname),
        "The SMTP server (submission) that sends the quarterly call logs and service information; None: mail "
        "waits in the outbox (in the store) until one is configured.",
    ),
    Key("mail.smtp_port", 587, port, "Its port (587: submission with STARTTLS)."),
    Key(
        "mail.starttls",
        True,
        boolean,
        "Require STARTTLS, checking the server's certificate against mail.ca_certificate (else the system's "
        "trust roots) and mail.smtp_host. False: plain SMTP (only to a relay on this machine).",
    ),
    Key(
        "mail.ca_certificate",
        None,
        optional(readableFile),
        "PEM file of the authority that signed the SMTP server's certificate; None: the system's trust roots.",
    ),
    Key("mail.username", None, optional(text), "SMTP AUTH user name; None: no authentication."),
    Key("mail.password", None, optional(text), "SMTP AUTH password (with mail.username)."),
    Key(
        "mail.from_address",
        None,
        optional(matching(EMAIL_PATTERN, "an e-mail address")),
        "The From address of every message; required to send mail.",
    ),
    Key("mail.timeout", 60, number(1, 600), "Seconds an SMTP conversation may take before it is abandoned."),
    Key(
        "mail.retry_delay",
        60,
        number(1, 86400),
        "Seconds before the first new attempt after a failure; each following one waits twice as long, up to "
        "mail.retry_max_delay.",
    ),
    Key("mail.retry_max_delay", 3600, number(1, 86400), "The longest wait between two attempts."),
    Key(
        "mail.max_attempts",
        48,
        integer(1, 1000),
        "Attempts before a message is given up (logged as an error, kept in the outbox as failed).",
    ),
    Key(
        "mail.poll_interval",
        30,
        number(1, 3600),
        "Seconds between two looks at the outbox for messages queued by aetasip-admin or another server.",
    ),
)


def _check(values: Any) -> None:
    if (values["mail.username"] is None) != (values["mail.password"] is None):
        raise ConfigError("mail.password", values["mail.password"], "a password with mail.username, and only then")


declareCheck(_check)


@attrs.frozen
class MailSettings:
    """The C{mail} section, read once."""

    host: str | None
    port: int = 587
    starttls: bool = True
    caCertificate: str | None = None
    username: str | None = None
    password: str | None = None
    fromAddress: str | None = None
    timeout: float = 60.0
    retryDelay: float = 60.0
    retryMaxDelay: float = 3600.0
    maxAttempts: int = 48
    pollInterval: float = 30.0

    @classmethod
    def fromConfig(cls, config: Any) -> MailSettings:
        return cls(
            host=config["mail.smtp_host"],
            port=config["mail.smtp_port"],
            starttls=config["mail.starttls"],
            caCertificate=config["mail.ca_certificate"],
            username=config["mail.username"],
            password=config["mail.password"],
            fromAddress=config["mail.from_address"],
            timeout=config["mail.timeout"],
            retryDelay=config["mail.retry_delay"],
            retryMaxDelay=config["mail.retry_max_delay"],
            maxAttempts=config["mail.max_attempts"],
            pollInterval=config["mail.poll_interval"],
        )

    def missing(self) -> str | None:
        """What keeps mail from being sent, or C{None}."""
        if self.host is None:
            return "mail.smtp_host is not set"
        if self.fromAddress is None:
            return "mail.from_address is not set"
        return None
