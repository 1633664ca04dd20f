"""
The C{testline} section of the configuration: the test line's numbers
(the programme on C{routing.test_number}, the echo line on
C{testline.echo_number}), how long it rings, how long a session may last,
when a silent caller is dropped, and where its media goes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from aetasip import net
from aetasip.config import (
    Config,
    ConfigError,
    Key,
    boolean,
    declare,
    declareCheck,
    integer,
    ipAddress,
    number,
    optional,
    text,
)
from aetasip.testline import audiofile
from aetasip.testline.session import ECHO, PROGRAMME, LineSettings

declare(
    Key(
        "testline.enabled",
        True,
        boolean,
        "Answer the test number (routing.test_number, default 15000) and the echo line inside the service: no "
        "account and no registration needed.",
    ),
    Key(
        "testline.echo_number",
        "15001",
        optional(text),
        "The echo line's number: it returns the caller's own audio (RTP); open to groups with outgoing-call blocking, "
        "as the test number is. None: no echo line.",
    ),
    Key("testline.ring_time", 1.0, number(0, 30), "Seconds a test line rings before it answers."),
    Key(
        "testline.max_duration",
        600,
        number(1, 86400),
        "Seconds after which a test line session ends with a BYE (long tests are discouraged).",
    ),
    Key(
        "testline.media_timeout",
        10,
        number(0, 3600),
        "Seconds without an RTP or RTCP packet from the caller after which the test line hangs up (BYE); 0: never.",
    ),
    Key(
        "testline.max_sessions",
        20,
        integer(1, 10_000),
        "Sessions a line (the programme, the echo) takes at once; further callers get 486 Busy Here.",
    ),
    Key(
        "testline.calls_per_hour",
        30,
        integer(0, 100_000),
        "Calls a caller may make to the test lines in an hour; beyond, 486 Busy Here with a Retry-After. 0: no limit.",
    ),
    Key(
        "testline.programme_file",
        None,
        optional(text),
        "An audio file (any format FFmpeg decodes: WAV, FLAC, MP3, ...) the test line plays, looped, instead of "
        "its generated programme (a 1 kHz tone at -18 dBFS and a channel identification).",
    ),
    Key(
        "testline.media_address",
        "0.0.0.0",
        ipAddress,
        "Address the test line's RTP ports are bound to (an ephemeral port per session).",
    ),
    Key(
        "testline.advertise",
        None,
        optional(ipAddress),
        "Address written in the test line's SDP answers: default testline.media_address if specific, else the "
        "first specific address of sip.listen of its family, else 127.0.0.1 (reachable from this host only: set "
        "it, or relay the calls, for callers elsewhere).",
    ),
)


def _numbers(values: Mapping[str, Any]) -> dict[str, str]:
    lines = {values["routing.test_number"]: PROGRAMME}
    echo = values["testline.echo_number"]
    if echo is not None:
        lines[echo] = ECHO
    return lines


def advertised(values: Mapping[str, Any]) -> str:
    """The address of the SDP answers (see C{testline.advertise})."""
    if values["testline.advertise"] is not None:
        return str(values["testline.advertise"])
    address = values["testline.media_address"]
    if address not in net.WILDCARDS:
        return str(address)
    family = ipaddress.ip_address(address).version
    for candidate in values.get("sip.listen", []):
        if candidate not in net.WILDCARDS and ipaddress.ip_address(candidate).version == family:
            return str(candidate)
    return "127.0.0.1" if family == 4 else "::1"


def _check(values: Mapping[str, Any]) -> None:
    echo = values["testline.echo_number"]
    test = values["routing.test_number"]
    if echo is not None and not echo.isdigit():
        raise ConfigError("testline.echo_number", echo, "None or a number of digits")
    if echo is not None and echo == test:
        raise ConfigError(
            "testline.echo_number",
            echo,
            f"a number other than routing.test_number ({test}): the test line and the echo line cannot share "
            "one; set testline.echo_number to another number (its default is 15001), or to None for no echo line",
        )
    if values["testline.enabled"]:
        # Numbers a caller dials that routing would give another meaning: the line is out of reach.
        digits = values["routing.short_number_digits"]
        hunting = values["routing.hunting_number"]
        for key, number in (("routing.test_number", test), ("testline.echo_number", echo)):
            if number is None:
                continue
            if len(number) == digits:
                raise ConfigError(
                    key,
                    number,
                    f"a number other than {digits} digits long (routing.short_number_digits): a member of a group "
                    f"dialling {number} would reach its group's short number {number}, not the test line",
                )
            if number == hunting:
                raise ConfigError(
                    key, number, f"a number other than routing.hunting_number ({hunting}), the hunting group number"
                )
    advertise = values["testline.advertise"]
    if advertise is not None:
        media = ipaddress.ip_address(values["testline.media_address"])
        if ipaddress.ip_address(advertise).is_unspecified or ipaddress.ip_address(advertise).version != media.version:
            raise ConfigError("testline.advertise", advertise, "a specific address of testline.media_address's family")


declareCheck(_check)


def lineSettings(config: Config, serverHeader: str = "aetasip") -> LineSettings:
    """
    The test line's L{LineSettings} from C{config}.

    @raise ConfigError: for a programme file that cannot be decoded.
    """
    path = config["testline.programme_file"]
    if path is not None:
        try:
            audiofile.check(path)
        except audiofile.ProgrammeFileError as e:
            raise ConfigError("testline.programme_file", path, f"an audio file FFmpeg decodes ({e})") from None
    return LineSettings(
        _numbers(config.values),
        config["testline.ring_time"],
        config["testline.max_duration"],
        config["testline.media_timeout"],
        config["testline.max_sessions"],
        advertised(config.values),
        serverHeader,
        path,
        config["testline.calls_per_hour"],
    )
