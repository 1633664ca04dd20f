"""
Conversions between the rows of the store's tables and its records, and
the columns computed from values (digests of a password, group options).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from aetasip.auth import computeHA1
from aetasip.location import Binding
from aetasip.store.models import (
    GROUP_OPTIONS,
    Account,
    Group,
    InvalidAccount,
    checkGroupOptions,
    checkPassword,
    storedRelay,
)


def bindingRow(binding: Binding, origin: str | None = None) -> dict[str, Any]:
    return {
        "origin": origin or "",
        "aor": binding.aor,
        "contact": binding.contact,
        "expires_at": binding.expiresAt,
        "call_id": binding.callID,
        "cseq": binding.cseq,
        "transport": binding.transport,
        "source_host": binding.source[0],
        "source_port": binding.source[1],
        "local_host": binding.local[0],
        "local_port": binding.local[1],
        "instance": binding.instance,
        "reg_id": binding.regID,
        "path": json.dumps(list(binding.path)),
        "user_agent": binding.userAgent,
        "q": binding.q,
        "registered_at": binding.registeredAt,
    }


def binding(row: sa.Row[Any]) -> Binding:
    return Binding(
        aor=row.aor,
        contact=row.contact,
        expiresAt=row.expires_at,
        callID=row.call_id,
        cseq=row.cseq,
        transport=row.transport,
        source=(row.source_host, row.source_port),
        local=(row.local_host, row.local_port),
        instance=row.instance,
        regID=row.reg_id,
        path=list(json.loads(row.path)),
        userAgent=row.user_agent,
        q=row.q,
        registeredAt=row.registered_at,
        writer=row.origin,
    )


def account(row: sa.Row[Any]) -> Account:
    return Account(
        number=row.number,
        kind=row.kind,
        displayName=row.display_name,
        email=row.email,
        realm=row.realm,
        ha1MD5=row.ha1_md5,
        ha1SHA256=row.ha1_sha256,
        portalPasswordHash=row.portal_password_hash,
        createdAt=row.created_at,
        updatedAt=row.updated_at,
        group=row.group_prefix,
        relay=row.relay,
    )


def accountRow(account: Account) -> dict[str, Any]:
    return {
        "number": account.number,
        "kind": account.kind,
        "display_name": account.displayName,
        "email": account.email,
        "realm": account.realm,
        "ha1_md5": account.ha1MD5,
        "ha1_sha256": account.ha1SHA256,
        "portal_password_hash": account.portalPasswordHash,
        "created_at": account.createdAt,
        "updated_at": account.updatedAt,
        "group_prefix": account.group,
        "relay": account.relay,
    }


def group(row: sa.Row[Any]) -> Group:
    return Group(
        prefix=row.prefix,
        contact=row.contact,
        incomingBlock=bool(row.incoming_block),
        outgoingBlock=bool(row.outgoing_block),
        hunting=bool(row.hunting),
        quarterlyLog=bool(row.quarterly_log),
        selfCare=bool(row.self_care),
        nextMember=row.next_member,
        nextHunting=row.next_hunting,
        createdAt=row.created_at,
        updatedAt=row.updated_at,
        relay=row.relay,
    )


def groupRow(group: Group) -> dict[str, Any]:
    return {
        "prefix": group.prefix,
        "contact": group.contact,
        "incoming_block": group.incomingBlock,
        "outgoing_block": group.outgoingBlock,
        "hunting": group.hunting,
        "quarterly_log": group.quarterlyLog,
        "self_care": group.selfCare,
        "next_member": group.nextMember,
        "next_hunting": group.nextHunting,
        "created_at": group.createdAt,
        "updated_at": group.updatedAt,
        "relay": group.relay,
    }


def groupValues(options: Mapping[str, object]) -> dict[str, object]:
    """
    The column values of the options of L{Store.updateGroup}, checked.
    """
    return {
        GROUP_OPTIONS[name]: storedRelay(value) if name == "relay" else value  # type: ignore[arg-type]
        for name, value in checkGroupOptions(options).items()
    }


def ha1Columns(number: str, realm: str, password: str) -> dict[str, str]:
    """
    The realm and digest columns of C{number} with the SIP password C{password}.

    @raise InvalidAccount: for a bad password or an empty realm.
    """
    checkPassword(password)
    if not realm:
        raise InvalidAccount("the realm must not be empty")
    return {
        "realm": realm,
        "ha1_md5": computeHA1("MD5", number, realm, password),
        "ha1_sha256": computeHA1("SHA-256", number, realm, password),
    }
