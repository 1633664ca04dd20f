"""
The authentication backends shipped with aetasip, as Twisted plugins:
C{sql} (accounts in the store), C{file} (an accounts file) and C{ldap}
(an LDAP directory).

The backend modules are imported only when a backend is made, so that
scanning the plugins stays cheap.
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from aetasip.interfaces import IAuthBackend, IAuthBackendFactory


@implementer(IPlugin, IAuthBackendFactory)
class SQLBackendFactory:
    """
    Makes L{aetasip.auth.sql.SQLAuthBackend}s.
    """

    name = "sql"

    def makeBackend(self, options: dict[str, Any], store: Any) -> IAuthBackend:
        from aetasip.auth.sql import makeSQLBackend

        return makeSQLBackend(options, store)


@implementer(IPlugin, IAuthBackendFactory)
class FileBackendFactory:
    """
    Makes L{aetasip.auth.file.FileAuthBackend}s.
    """

    name = "file"

    def makeBackend(self, options: dict[str, Any], store: Any) -> IAuthBackend:
        from aetasip.auth.file import makeFileBackend

        return makeFileBackend(options, store)


@implementer(IPlugin, IAuthBackendFactory)
class LDAPBackendFactory:
    """
    Makes L{aetasip.auth.ldap.LDAPAuthBackend}s.
    """

    name = "ldap"

    def makeBackend(self, options: dict[str, Any], store: Any) -> IAuthBackend:
        from aetasip.auth.ldap import makeLDAPBackend

        return makeLDAPBackend(options, store)


sql = SQLBackendFactory()
file = FileBackendFactory()
ldap = LDAPBackendFactory()
