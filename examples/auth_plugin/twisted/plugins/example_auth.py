"""
The Twisted plugin that names the example backend C{example}.

It lives in a directory C{twisted/plugins/} without C{__init__.py}, next
to C{example_backend.py}, in a directory on C{sys.path}. Scanning the
plugins imports this module: keep it small, and import the backend only
when it is made.
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from aetasip.interfaces import IAuthBackend, IAuthBackendFactory


@implementer(IPlugin, IAuthBackendFactory)
class ExampleBackendFactory:
    """
    Makes L{example_backend.ExampleAuthBackend}s.
    """

    name = "example"

    def makeBackend(self, options: dict[str, Any], store: Any) -> IAuthBackend:
        """
        See L{IAuthBackendFactory.makeBackend}. This backend does not use
        the service's C{store}.
        """
        from example_backend import makeExampleBackend

        return makeExampleBackend(options)


example = ExampleBackendFactory()
