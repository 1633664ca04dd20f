"""
The messages aetasip mails: plain text, English then French, with
optional attachments; each with its own Message-ID and Date, made once
when it is queued (so a message sent again after a lost reply is the same
message).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from aetasip.records.periods import Quarter

SEPARATOR = "\n\n----- Français -----\n\n"


def compose(
    fromAddress: str,
    recipient: str,
    subject: str,
    body: str,
    now: float,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> bytes:
    """
    A message ready to send.

    @param attachments: C{(file name, MIME type, content)} of each.
    @return: its bytes, lines ending in LF (the SMTP client sends CRLF).
    """
    message = EmailMessage()
    message["From"] = fromAddress
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    message["Message-ID"] = make_msgid("aetasip", domain=fromAddress.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
    for name, mimeType, content in attachments:
        maintype, _, subtype = mimeType.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def bilingual(english: str, french: str) -> str:
    return english.rstrip() + SEPARATOR + french.rstrip() + "\n"


def quarterlySubject(prefix: str, quarter: Quarter) -> str:
    return f"Call log {quarter}, group {prefix} / Journal des appels {quarter}, groupe {prefix}"


def quarterlyBody(prefix: str, quarter: Quarter, calls: int, serviceName: str) -> str:
    first = f"{quarter.year}-{3 * quarter.number - 2:02d}-01"
    english = (
        f"Hello,\n\nAttached is the call log of group {prefix} for the quarter {quarter} (from {first}, UTC): "
        f"the {calls} answered calls from or to the group's numbers that began or ended in the quarter, with "
        "their begin date and time (UTC), duration in seconds, calling and called number. A call that spans the "
        "end of a quarter appears in the logs of both.\n\n"
        f"This message is sent automatically by {serviceName} to the technical contact of the group.\n"
    )
    french = (
        f"Bonjour,\n\nVeuillez trouver ci-joint le journal des appels du groupe {prefix} pour le trimestre "
        f"{quarter} (à partir du {first}, UTC) : les {calls} appels aboutis depuis ou vers les numéros du groupe, "
        "commencés ou terminés dans le trimestre, avec leur date et heure de début (UTC), leur durée en secondes, "
        "le numéro appelant et le numéro appelé. Un appel à cheval sur la fin d'un trimestre figure dans les deux "
        "journaux.\n\n"
        f"Ce message est envoyé automatiquement par {serviceName} au contact technique du groupe.\n"
    )
    return bilingual(english, french)


def noticeBody(text: str, prefixes: Sequence[str], serviceName: str) -> str:
    """
    An operator's service information C{text}, with a bilingual footer
    saying why it was received (the contact of the groups C{prefixes}).
    """
    listed = ", ".join(prefixes)
    english, french = (
        (f"group {listed}", f"du groupe {listed}")
        if len(prefixes) == 1
        else (
            f"groups {listed}",
            f"des groupes {listed}",
        )
    )
    footer = bilingual(
        f"You receive this service information from {serviceName} as the technical contact of {english}.",
        f"Vous recevez cette information de service de {serviceName} en tant que contact technique {french}.",
    )
    return text.rstrip() + "\n\n-- \n" + footer
