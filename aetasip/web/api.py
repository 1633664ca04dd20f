"""
The admin API: JSON over HTTP(S), under C{/api/v1/}, for operators who
provision by program rather than with C{aetasip-admin}. Both call the same
L{Provisioning} layer, so the rules and errors are the same; what acts on
the running service (calls, registrations, relay and test-line sessions)
goes through L{Operations}, which C{aetasip-admin} reaches through this
API on the control socket (L{aetasip.web.control}).

Every route but the OpenAPI description asks for a bearer token over TCP:
one of C{web.admin_tokens}, compared by its SHA-256 digest, in constant
time, with every configured one; or one kept in the store (C{aetasip-admin
token add}), found by its digest (L{aetasip.web.tokens}). On the control socket (a
UNIX socket of mode 0600) no token is asked: whoever can open it is the
service's user or root. Errors are JSON C{{"error": "..."}} with the
status that says what went wrong: 400 for a bad value, 401 without a
valid token, 404 for no such account, group, call or route, 405, 409 when
the store refuses (a number taken), 413, 415.
"""

from __future__ import annotations

import re

from twisted.web.iweb import IRequest

from aetasip.web.apiframe import app, writeJSON
from aetasip.web.apiprovisioning import ProvisioningRoutes
from aetasip.web.apirecords import RecordRoutes
from aetasip.web.apirunning import RunningRoutes
from aetasip.web.openapi import openAPIDocument


class AdminAPI(ProvisioningRoutes, RecordRoutes, RunningRoutes):
    """
    The routes of the admin API, relative to C{/api/v1/}: the frame they
    share in L{APIFrame <aetasip.web.apiframe.APIFrame>}; the accounts and
    groups in L{ProvisioningRoutes}; the call records in L{RecordRoutes};
    the running service's registrations, calls and sessions in
    L{RunningRoutes}; and here the OpenAPI description.
    """

    # -- the description

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return writeJSON(request, 200, openAPIDocument())

    def routes(self) -> list[tuple[str, str]]:
        """Every route as C{(method, path)} with OpenAPI's C{{name}} placeholders."""
        found = []
        for rule in self.app.url_map.iter_rules():
            path = re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", rule.rule)
            for method in rule.methods or ():
                if method not in ("HEAD", "OPTIONS"):
                    found.append((method, path))
        return sorted(found)
