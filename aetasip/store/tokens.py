"""
The admin API's bearer tokens kept in the store (C{aetasip-admin token
add}), methods of L{aetasip.store.sql.Store}. Only each token's SHA-256
digest is stored, with the name the operator gave it, when it was made and
when it was last used; the token itself is shown once, when it is made.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import attrs
import sqlalchemy as sa

from aetasip.store.models import InvalidValue, StoreError
from aetasip.store.schema import adminTokens

TOKEN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""A token's name: up to 64 letters, digits, dots, dashes, underscores and at signs."""


class AdminTokenExists(StoreError):
    """A token of that name exists already."""


class NoSuchAdminToken(StoreError):
    """No token of that name."""


def checkTokenName(name: str) -> str:
    """
    @raise InvalidValue: unless C{name} matches L{TOKEN_NAME_PATTERN}.
    """
    if not TOKEN_NAME_PATTERN.fullmatch(name):
        raise InvalidValue(
            f"token name {name!r}: expected up to 64 letters, digits, '.', '-', '_' or '@', "
            "starting with a letter or digit"
        )
    return name


@attrs.frozen
class AdminToken:
    """
    What the store knows of a token: never the token.

    @ivar digest: its SHA-256 digest, in hexadecimal.
    @ivar lastUsed: when the admin API last accepted it (recorded within a
        few seconds of the use), or C{None}.
    """

    name: str
    digest: str
    createdAt: float
    lastUsed: float | None


def _token(row: sa.Row[Any]) -> AdminToken:
    return AdminToken(row.name, row.digest, row.created_at, row.last_used)


class TokenMethods:
    """The admin token methods of L{aetasip.store.sql.Store}."""

    _transaction: Callable[..., AbstractContextManager[sa.Connection]]

    def addAdminToken(self, name: str, digest: str, now: float | None = None) -> AdminToken:
        """
        Keep the digest of a new token.

        @param digest: the token's SHA-256 digest in hexadecimal.
        @raise AdminTokenExists: when C{name} (or, against all odds, the digest) is taken.
        @raise InvalidValue: for a bad name or digest.
        """
        checkTokenName(name)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise InvalidValue("a token digest is 64 lowercase hexadecimal digits")
        token = AdminToken(name, digest, time.time() if now is None else now, None)
        try:
            with self._transaction(write=True) as connection:
                connection.execute(
                    adminTokens.insert().values(name=name, digest=digest, created_at=token.createdAt, last_used=None)
                )
        except sa.exc.IntegrityError:
            raise AdminTokenExists(f"a token named {name} exists already") from None
        return token

    def listAdminTokens(self) -> list[AdminToken]:
        """Every token, by name."""
        with self._transaction() as connection:
            return [_token(row) for row in connection.execute(sa.select(adminTokens).order_by(adminTokens.c.name))]

    def deleteAdminToken(self, name: str) -> None:
        """
        @raise NoSuchAdminToken: when there is no token C{name}.
        """
        with self._transaction(write=True) as connection:
            if connection.execute(adminTokens.delete().where(adminTokens.c.name == name)).rowcount == 0:
                raise NoSuchAdminToken(f"no token named {name}")

    def adminTokenDigests(self, used: Mapping[str, float] | None = None) -> dict[bytes, str]:
        """
        The digests of the tokens, after recording when some were last used.

        @param used: token names and the time each was last accepted.
        @return: each token's raw digest and its name.
        """
        if used:
            with self._transaction(write=True) as connection:
                for name, when in used.items():
                    connection.execute(
                        adminTokens.update()
                        .where(adminTokens.c.name == name)
                        .where(sa.or_(adminTokens.c.last_used.is_(None), adminTokens.c.last_used < when))
                        .values(last_used=when)
                    )
        with self._transaction() as connection:
            rows = connection.execute(sa.select(adminTokens.c.name, adminTokens.c.digest))
            return {bytes.fromhex(row.digest): row.name for row in rows}
