"""
The OpenAPI 3.1 description of the admin API, served at
C{/api/v1/openapi.json}: its paths here, the schemas they name in
L{aetasip.web.openapischemas}. A test checks its paths and methods
against the routes the API really has.
"""

from __future__ import annotations

from typing import Any

from aetasip import __version__
from aetasip.records.query import MAX_RECORD_PAGE, RECORD_PAGE
from aetasip.web.openapischemas import schemas


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_NUMBER = {"name": "number", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{1,32}$"}}
_PREFIX = {"name": "prefix", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{4}$"}}
_CALL_ID = {
    "name": "callId",
    "in": "path",
    "required": True,
    "description": "The SIP Call-ID, percent-encoded (it may hold '/').",
    "schema": {"type": "string"},
}
_UNAUTHORIZED = _error("No valid bearer token (over TCP; the control socket needs none).")
_NOT_FOUND = _error("No such account.")
_NO_GROUP = _error("No such group.")
_BAD = _error("A bad value, member or body.")
_BODY_ERRORS = {"413": _error("The body is too large."), "415": _error("The body is not JSON.")}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


_RECORD_FILTERS = [
    _query("number", "Only the calls from, to (dialled) or answered by this number."),
    _query("group", "Only the calls of this group's members (its prefix)."),
    _query("from", "Only the calls begun or ended at or after this time (ISO 8601; UTC unless an offset is given)."),
    _query("to", "Only the calls begun or ended before this time (ISO 8601)."),
    _query("quarter", "Only the calls begun or ended in this calendar quarter (UTC), e.g. 2026Q3."),
    _query("answeredOnly", "Only answered calls (begun then means answered).", {"type": "boolean", "default": False}),
    _query("limit", "At most this many records, the oldest first.", {"type": "integer", "minimum": 1}),
    _query("offset", "Skip this many records first.", {"type": "integer", "minimum": 0, "default": 0}),
]
# /records pages: the same filters, a limit by default and a bound on it.
_RECORD_PAGE_PARAMETERS = [
    *_RECORD_FILTERS[:-2],
    _query(
        "limit",
        f"Records in this page, at most {MAX_RECORD_PAGE}.",
        {"type": "integer", "minimum": 1, "maximum": MAX_RECORD_PAGE, "default": RECORD_PAGE},
    ),
    _query(
        "offset",
        "Records to skip before this page: the previous page's offset plus its records (or follow 'next').",
        {"type": "integer", "minimum": 0, "default": 0},
    ),
]


def _paths() -> dict[str, Any]:
    """The paths of the groups, registrations, records and running-service routes."""
    return {
        "/groups": {
            "get": {
                "summary": "List the groups.",
                "responses": {"200": _json("GroupList", "The groups."), "400": _BAD, "401": _UNAUTHORIZED},
            },
            "post": {
                "summary": "Create a group of premium numbers, with no member yet.",
                "requestBody": _body("NewGroup"),
                "responses": {
                    "201": _json("Group", "The group."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "409": _error("The prefix is taken."),
                    **_BODY_ERRORS,
                },
            },
        },
        "/groups/{prefix}": {
            "parameters": [_PREFIX],
            "get": {
                "summary": "One group, with its members and hunting series.",
                "responses": {
                    "200": _json("GroupDetail", "The group."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "404": _NO_GROUP,
                },
            },
            "patch": {
                "summary": "Change a group's contact, options or relay mode; switching hunting on creates the "
                "hunting series, whose passwords are shown once.",
                "requestBody": _body("GroupChange"),
                "responses": {
                    "200": _json("ChangedGroup", "The group, and the accounts it created."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "404": _NO_GROUP,
                    **_BODY_ERRORS,
                },
            },
            "delete": {
                "summary": "Delete a group that has no accounts left.",
                "responses": {
                    "200": _json("DeletedGroup", "The group is deleted."),
                    "401": _UNAUTHORIZED,
                    "404": _NO_GROUP,
                    "409": _error("The group still has accounts."),
                },
            },
        },
        "/groups/{prefix}/allocate": {
            "parameters": [_PREFIX],
            "post": {
                "summary": "Create the group's next numbers (and hunting accounts), each with a generated SIP "
                "password shown once.",
                "requestBody": _body("Allocation"),
                "responses": {
                    "201": _json("Allocated", "The new accounts and their passwords."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "404": _NO_GROUP,
                    "409": _error("The group's sequence has no room left."),
                    **_BODY_ERRORS,
                },
            },
        },
        "/groups/{prefix}/members": {
            "parameters": [_PREFIX],
            "post": {
                "summary": "Make an existing account a member of the group.",
                "requestBody": _body("Member"),
                "responses": {
                    "200": _json("Account", "The account."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "404": _error("No such group or account."),
                    "409": _error("The account cannot join the group."),
                    **_BODY_ERRORS,
                },
            },
        },
        "/groups/{prefix}/members/{number}": {
            "parameters": [_PREFIX, _NUMBER],
            "delete": {
                "summary": "Take an account out of the group.",
                "responses": {
                    "200": _json("Account", "The account."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "404": _error("No such account, or not a member of this group."),
                },
            },
        },
        "/locations": {
            "get": {
                "summary": "The current registrations, live from the running service.",
                "parameters": [_query("number", "Only this number's.")],
                "responses": {"200": _json("LocationList", "The registrations."), "400": _BAD, "401": _UNAUTHORIZED},
            },
        },
        "/locations/{number}": {
            "parameters": [_NUMBER],
            "delete": {
                "summary": "Remove a registration: calls stop reaching it at once; it leaves the store within a "
                "second.",
                "parameters": [{**_query("contact", "The registration's contact URI."), "required": True}],
                "responses": {
                    "200": _json("RemovedLocation", "The registration removed."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                    "404": _error("No such registration."),
                },
            },
        },
        "/records": {
            "get": {
                "summary": "Call records (the queries of aetasip-admin cdr), a page at a time.",
                "description": (
                    "Records in a stable order, the oldest first (by start time, then id; new calls come "
                    "last), a page of 'limit' records from 'offset'. The answer gives the total the filters "
                    "select and 'next', the address of the next page (null on the last one), also sent as "
                    'a Link header with rel="next".'
                ),
                "parameters": _RECORD_PAGE_PARAMETERS,
                "responses": {
                    "200": {
                        **_json("RecordPage", "A page of records."),
                        "headers": {
                            "Link": {
                                "description": '<next page>; rel="next", unless this is the last page.',
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                },
            },
        },
        "/records.csv": {
            "get": {
                "summary": "Call records as CSV: the columns of aetasip-admin cdr export; all of them unless "
                "'limit' is given.",
                "parameters": _RECORD_FILTERS,
                "responses": {
                    "200": {
                        "description": "CSV with a header row; UTC ISO 8601 times; whole seconds.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                },
            },
        },
        "/calls": {
            "get": {
                "summary": "The calls in progress.",
                "responses": {"200": _json("CallList", "The calls."), "400": _BAD, "401": _UNAUTHORIZED},
            },
        },
        "/calls/{callId}": {
            "parameters": [_CALL_ID],
            "delete": {
                "summary": "Release the call(s) with this Call-ID: BYE to both parties of an answered call, a "
                "call being set up cancelled; end cause 'operator release'.",
                "responses": {
                    "200": _json("ReleasedCalls", "The calls released."),
                    "401": _UNAUTHORIZED,
                    "404": _error("No call in progress with this Call-ID."),
                },
            },
        },
        "/relay/sessions": {
            "get": {
                "summary": "The relay sessions of every node, with their media statistics.",
                "responses": {"200": _json("RelaySessionList", "The sessions."), "400": _BAD, "401": _UNAUTHORIZED},
            },
        },
        "/relay/sessions/{callId}": {
            "parameters": [_CALL_ID],
            "delete": {
                "summary": "Release the relay sessions of this Call-ID: their call is released (BYE to both "
                "parties); a session without a call is deleted on its node.",
                "responses": {
                    "200": _json("ReleasedRelaySessions", "The sessions released."),
                    "401": _UNAUTHORIZED,
                    "404": _error("No relay session with this Call-ID."),
                },
            },
        },
        "/testline/sessions": {
            "get": {
                "summary": "The test-line sessions in progress.",
                "responses": {
                    "200": _json("TestLineSessionList", "The sessions."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                },
            },
            "delete": {
                "summary": "Release every test-line session (BYE to the callers).",
                "responses": {
                    "200": _json("ReleasedTestLineSessions", "The sessions released."),
                    "400": _BAD,
                    "401": _UNAUTHORIZED,
                },
            },
        },
        "/testline/sessions/{callId}": {
            "parameters": [_CALL_ID],
            "delete": {
                "summary": "Release the test-line session of this Call-ID (BYE to the caller).",
                "responses": {
                    "200": _json("ReleasedTestLineSessions", "The sessions released."),
                    "401": _UNAUTHORIZED,
                    "404": _error("No test-line session with this Call-ID."),
                },
            },
        },
    }


def openAPIDocument() -> dict[str, Any]:
    """The description, as a JSON-ready dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aetasip admin API",
            "version": __version__,
            "description": "Provisioning and operation of the aetasip SIP service: the same rules as "
            "aetasip-admin. Over TCP (web.listen, or web.admin_listen when set) every route but this "
            "description needs a bearer token: one of web.admin_tokens, or one made with 'aetasip-admin token "
            "add'; on the control socket (web.control_socket) none.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {
                "get": {
                    "summary": "This description.",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document."}},
                }
            },
            "/accounts": {
                "get": {
                    "summary": "List the accounts.",
                    "parameters": [{"name": "kind", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {"200": _json("AccountList", "The accounts."), "400": _BAD, "401": _UNAUTHORIZED},
                },
                "post": {
                    "summary": "Create an account; its SIP password is generated unless given, and shown once.",
                    "requestBody": _body("NewAccount"),
                    "responses": {
                        "201": _json("CreatedAccount", "The account and its SIP password."),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "409": _error("The number is taken, or the group refuses it."),
                        "413": _error("The body is too large."),
                        "415": _error("The body is not JSON."),
                    },
                },
            },
            "/accounts/{number}": {
                "parameters": [_NUMBER],
                "get": {
                    "summary": "One account.",
                    "responses": {"200": _json("Account", "The account."), "401": _UNAUTHORIZED, "404": _NOT_FOUND},
                },
                "patch": {
                    "summary": "Change an account's name, e-mail address, kind or relay mode.",
                    "requestBody": _body("AccountChange"),
                    "responses": {
                        "200": _json("Account", "The account changed."),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                },
                "delete": {
                    "summary": "Delete an account and its registrations.",
                    "responses": {
                        "200": _json("Deleted", "The account is deleted."),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                },
            },
            "/accounts/{number}/password": {
                "parameters": [_NUMBER],
                "post": {
                    "summary": "Set the account's SIP password: the one given, or a generated one; shown once.",
                    "requestBody": _body("PasswordChange"),
                    "responses": {
                        "200": _json("NewPassword", "The password set."),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                },
            },
            "/accounts/{number}/portal-password": {
                "parameters": [_NUMBER],
                "post": {
                    "summary": "Set the account's self-care portal password: the one given, or a generated one; "
                    "shown once.",
                    "requestBody": _body("PasswordChange"),
                    "responses": {
                        "200": _json("NewPassword", "The password set."),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                },
                "delete": {
                    "summary": "Remove the account's portal password: it can no longer log in to the portal.",
                    "responses": {
                        "200": _json("Account", "The account changed."),
                        "401": _UNAUTHORIZED,
                        "404": _NOT_FOUND,
                    },
                },
            },
            **_paths(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    }
