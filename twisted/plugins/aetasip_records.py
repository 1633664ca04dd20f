"""
The call-record observer shipped with aetasip, as a plugin
(C{calls.observers = ["records"]}, the default). Kept small: this module
is imported whenever plugins are looked up.
"""

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from aetasip.interfaces import ICallObserverFactory


@implementer(IPlugin, ICallObserverFactory)
class CallRecordsFactory:
    """C{records}: a record of every call attempt in the store (L{aetasip.records.cdr})."""

    name = "records"

    def makeObserver(self, config: Any, store: Any) -> Any:
        from aetasip.records.cdr import makeCDRService

        return makeCDRService(config, store)


records = CallRecordsFactory()
