"""
The RTP relay's media handler, as a plugin (C{calls.media_handler =
"relay"}). Kept small: this module is imported whenever plugins are
looked up; the relay is imported only when the handler is made.
"""

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from aetasip.interfaces import IMediaHandlerFactory


@implementer(IPlugin, IMediaHandlerFactory)
class RelayHandlerFactory:
    name = "relay"

    def makeHandler(self, config: Any, calls: Any, directory: Any = None) -> Any:
        from aetasip.relay.handler import makeRelayHandler

        return makeRelayHandler(config, calls, directory)


relay = RelayHandlerFactory()
