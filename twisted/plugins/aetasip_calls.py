"""
The call observers shipped with aetasip, as plugins (C{calls.observers}).
Kept small: this module is imported whenever plugins are looked up.
"""

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from aetasip.interfaces import ICallObserverFactory


@implementer(IPlugin, ICallObserverFactory)
class CallLogFactory:
    name = "log"

    def makeObserver(self, config: Any, store: Any) -> Any:
        from aetasip.calls.log import CallLog

        return CallLog()


log = CallLogFactory()
