"""
The OpenAPI 3.1 description of the admin API, served at
C{/api/v1/openapi.json}. A test checks its paths and methods against the
routes the API really has.
"""

from __future__ import annotations

from typing import Any

from aetasip import __version__


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
_UNAUTHORIZED = _error("No valid bearer token.")
_NOT_FOUND = _error("No such account.")
_BAD = _error("A bad value, member or body.")


def openAPIDocument() -> dict[str, Any]:
    """The description, as a JSON-ready dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aetasip admin API",
            "version": __version__,
            "description": "Provisioning of the aetasip SIP service: the same rules as aetasip-admin.",
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
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Account": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "string"},
                        "kind": {"type": "string"},
                        "displayName": {"type": "string"},
                        "email": {"type": "string"},
                        "group": {"type": ["string", "null"]},
                        "relay": {"type": ["string", "null"], "enum": ["auto", "always", "never", None]},
                        "portalPassword": {"type": "boolean", "description": "Whether a portal password is set."},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "updatedAt": {"type": "string", "format": "date-time"},
                    },
                },
                "AccountList": {
                    "type": "object",
                    "properties": {"accounts": {"type": "array", "items": {"$ref": "#/components/schemas/Account"}}},
                },
                "NewAccount": {
                    "type": "object",
                    "required": ["number"],
                    "additionalProperties": False,
                    "properties": {
                        "number": {"type": "string"},
                        "kind": {"type": "string", "default": "premium"},
                        "password": {"type": "string", "description": "The SIP password; generated when absent."},
                        "displayName": {"type": "string"},
                        "email": {"type": "string"},
                        "group": {"type": "string", "description": "The prefix of the group it joins."},
                        "portalPassword": {"type": "string"},
                    },
                },
                "CreatedAccount": {
                    "type": "object",
                    "properties": {"account": {"$ref": "#/components/schemas/Account"}, "password": {"type": "string"}},
                },
                "AccountChange": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "displayName": {"type": "string"},
                        "email": {"type": "string"},
                        "kind": {"type": "string"},
                        "relay": {"type": "string", "enum": ["auto", "always", "never", "inherit"]},
                    },
                },
                "PasswordChange": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"password": {"type": "string", "description": "Generated when absent."}},
                },
                "NewPassword": {
                    "type": "object",
                    "properties": {"number": {"type": "string"}, "password": {"type": "string"}},
                },
                "Deleted": {
                    "type": "object",
                    "properties": {"number": {"type": "string"}, "deletedRegistrations": {"type": "integer"}},
                },
            },
        },
    }
