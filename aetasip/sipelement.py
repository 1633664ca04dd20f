"""
The SIP element of the service tree: transports and transaction layers
(L{SIPService}) with the registrar, the shared authentication step and
the proxy attached (L{makeSIPService}); the call observers and media
handler factory the configuration names, and the dialog tokens' key.
L{aetasip.tap} builds the tree with them.
"""

from __future__ import annotations

import os
from typing import Any

from aetasip import __version__, config
from aetasip.auth.limits import FailureLimits
from aetasip.auth.step import Authentication
from aetasip.calls.call import CallObservers
from aetasip.calls.media import MediaHook
from aetasip.calls.proxy import Proxy
from aetasip.calls.settings import callSettings
from aetasip.calls.token import DialogSigner
from aetasip.domains import LocalDomains
from aetasip.element.core import SIPCore
from aetasip.element.flood import FloodControl
from aetasip.interfaces import ICallObserverFactory, IMediaHandlerFactory
from aetasip.location import LocationService
from aetasip.plugins import chosen, namedPlugins
from aetasip.registrar import Registrar
from aetasip.routing import Directory
from aetasip.routing.chain import makeRoutingChain
from aetasip.sip.digest import DigestAuthenticator
from aetasip.sipservice import SIPService
from aetasip.store import StoreService


def dialogKey(cfg: config.Config, storeService: StoreService) -> bytes:
    """
    The key of the dialog tokens: C{calls.dialog_key}, else the store's
    secret, shared by every server on the same store.
    """
    configured = cfg["calls.dialog_key"]
    if configured is not None:
        return configured.encode()
    return storeService.store.store.secret("dialog-token")


def makeSIPService(
    cfg: config.Config,
    auth: Any,
    store: Any = None,
    reactor: Any = None,
    directory: Directory | None = None,
    observers: CallObservers | None = None,
    media: Any = None,
    dialogKey: bytes | None = None,
) -> SIPService:
    """
    The SIP element: transports and transaction layers (L{SIPService}),
    and the registrar, the shared authentication step and the proxy they
    feed, built here and attached to it.

    @param dialogKey: the key of the dialog tokens (see
        L{aetasip.calls.token}); default: C{calls.dialog_key}, else a
        random one (in-dialog requests then do not survive a restart).
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    serverHeader = f"aetasip/{__version__}"
    domains = LocalDomains(cfg["sip.domains"], cfg["sip.listen"])
    digest = DigestAuthenticator(
        cfg["sip.realm"], cfg["auth.algorithms"], cfg["auth.nonce_lifetime"], now=reactor.seconds
    )
    limits = FailureLimits.fromConfig(cfg, reactor.seconds)
    authentication = Authentication(
        digest, auth, cfg["sip.realm"], serverHeader, md5OnlyAgents=cfg["auth.md5_only_agents"], limits=limits
    )
    location = LocationService(reactor, store)
    registrar = Registrar(cfg, location, authentication, domains, serverHeader)
    sip = SIPService(cfg, location, domains, serverHeader, reactor)
    if dialogKey is None:
        configured = cfg["calls.dialog_key"]
        dialogKey = configured.encode() if configured is not None else os.urandom(32)
    proxy = Proxy(
        reactor,
        authentication,
        location,
        domains,
        sip.clients,
        sip.hopTo,
        sip.hopToURI,
        sip.address,
        serverHeader,
        sip.isOurs,
        DialogSigner(dialogKey),
        makeRoutingChain(cfg),
        directory,
        cfg["routing.hunting_ring_time"],
        observers,
        MediaHook(media),
        callSettings(cfg),
    )
    flood = FloodControl.fromConfig(cfg, reactor.seconds)
    core = SIPCore(sip.transactions, registrar, domains, serverHeader, proxy, sip.clients, flood)
    sip.attach(core, registrar, proxy)
    return sip


def callParts(cfg: config.Config, store: Any) -> tuple[CallObservers, Any]:
    """
    The call observers and the media handler factory the configuration
    names (C{calls.observers}, C{calls.media_handler}).

    @raise config.ConfigError: for a name no plugin has.
    """
    factories = chosen("calls.observers", cfg["calls.observers"], namedPlugins(ICallObserverFactory, "call observers"))
    observers = CallObservers(factory.makeObserver(cfg, store) for factory in factories)
    mediaFactory = None
    if cfg["calls.media_handler"] is not None:
        (mediaFactory,) = chosen(
            "calls.media_handler", [cfg["calls.media_handler"]], namedPlugins(IMediaHandlerFactory, "media handlers")
        )
    return observers, mediaFactory
