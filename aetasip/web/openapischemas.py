"""
The schemas of the admin API's OpenAPI description (its
C{components.schemas}): the JSON objects its routes take and answer.
L{aetasip.web.openapi} describes the paths that name them.
"""

from __future__ import annotations

from typing import Any


def _schema(properties: dict[str, Any], required: list[str] | None = None, closed: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if closed:
        schema["additionalProperties"] = False
    return schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(member: str, item: str) -> dict[str, Any]:
    return _schema({member: {"type": "array", "items": _ref(item)}})


_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_FLAG = {"type": "boolean"}
_GROUP_FLAGS = {
    "incomingBlock": {"type": "boolean", "description": "Calls from outside the group to it are refused."},
    "outgoingBlock": {"type": "boolean", "description": "Calls from the group to outside it are refused (but 15000)."},
    "hunting": {"type": "boolean", "description": "prefix+6000 rings prefix+6001, 6002, ... in turn."},
    "quarterlyLog": {"type": "boolean", "description": "A call log goes to the contact every quarter."},
    "selfCare": {"type": "boolean", "description": "The members may use the self-care portal."},
}
_RELAY_MODE = {"type": "string", "enum": ["auto", "always", "never", "inherit"]}
_STREAM = _schema(
    {
        "packets": {"type": "integer"},
        "bytes": {"type": "integer"},
        "lost": {"type": "integer"},
        "jitter": {"type": "number", "description": "Interarrival jitter, ms (RFC 3550)."},
        "rFactor": {"type": ["number", "null"]},
        "mos": {"type": ["number", "null"]},
        "lastPacketAt": _NULLABLE_TIME,
    }
)
_LEG = _schema(
    {
        "latched": {"type": ["string", "null"], "description": "host:port its media was latched to."},
        "received": _ref("Stream"),
        "sent": _ref("Stream"),
        "dropped": {"type": "integer", "description": "Packets from a source that is not the leg's."},
    }
)


def _runningSchemas() -> dict[str, Any]:
    """The schemas of the groups, registrations, records and running-service routes."""
    group = {
        "prefix": _STRING,
        "contact": _STRING,
        **_GROUP_FLAGS,
        "relay": {"type": ["string", "null"], "enum": ["auto", "always", "never", None]},
        "huntingNumber": _NULLABLE_STRING,
        "nextNumber": _STRING,
        "createdAt": _TIME,
        "updatedAt": _TIME,
    }
    newPasswords = {"type": "array", "items": _ref("NewPassword")}
    call = {
        "id": {"type": "integer", "description": "The call's number in this process."},
        "callId": _STRING,
        "caller": _STRING,
        "callerKind": _STRING,
        "domain": _STRING,
        "callerSource": _STRING,
        "callerTransport": _STRING,
        "dialled": _STRING,
        "resolved": {"type": "array", "items": _STRING},
        "callee": _NULLABLE_STRING,
        "state": {"type": "string", "enum": ["attempting", "ringing", "answered", "ended"]},
        "startedAt": _TIME,
        "ringingAt": _NULLABLE_TIME,
        "answeredAt": _NULLABLE_TIME,
        "duration": {"type": "number", "description": "Seconds since the answer."},
        "relayNode": _NULLABLE_STRING,
        "recovered": _FLAG,
    }
    relaySession = {
        "node": _STRING,
        "callId": _STRING,
        "fromTag": _STRING,
        "call": {"oneOf": [_ref("Call"), {"type": "null"}]},
        "caller": _ref("RelayLeg"),
        "callee": _ref("RelayLeg"),
    }
    testLineSession = {
        "number": _STRING,
        "kind": {"type": "string", "enum": ["programme", "echo"]},
        "callId": _STRING,
        "caller": _STRING,
        "state": {"type": "string", "enum": ["ringing", "answered", "confirmed", "ended"]},
        "startedAt": _TIME,
        "answeredAt": _NULLABLE_TIME,
        "duration": {"type": "number"},
        "codec": _NULLABLE_STRING,
        "mediaTo": _STRING,
        "latched": _FLAG,
        "packetsSent": {"type": "integer"},
        "packetsReceived": {"type": "integer"},
    }
    record = {
        "id": _STRING,
        "server": _STRING,
        "callId": _STRING,
        "caller": _STRING,
        "callerKind": _STRING,
        "domain": _STRING,
        "source": _STRING,
        "transport": _STRING,
        "dialled": _STRING,
        "resolved": {"type": "array", "items": _STRING},
        "callee": _NULLABLE_STRING,
        "calleeAddress": _NULLABLE_STRING,
        "calleeTransport": _NULLABLE_STRING,
        "startedAt": _TIME,
        "ringingAt": _NULLABLE_TIME,
        "answeredAt": _NULLABLE_TIME,
        "endedAt": _NULLABLE_TIME,
        "duration": {"type": "number"},
        "status": {"type": "integer"},
        "endCause": _NULLABLE_STRING,
        "endDetail": _STRING,
        "recovered": _FLAG,
        "relayNode": _NULLABLE_STRING,
        "media": {"type": ["object", "null"], "description": "The relay's statistics by leg, when relayed."},
    }
    location = {
        "number": _STRING,
        "contact": _STRING,
        "source": _STRING,
        "transport": _STRING,
        "local": _STRING,
        "userAgent": _STRING,
        "instance": _NULLABLE_STRING,
        "registeredAt": _NULLABLE_TIME,
        "expiresAt": _TIME,
        "expiresIn": {"type": "integer"},
    }
    return {
        "Group": _schema(group),
        "GroupList": _list("groups", "Group"),
        "GroupDetail": _schema(
            {
                **group,
                "members": {
                    "type": "array",
                    "items": _schema({"number": _STRING, "kind": _STRING, "displayName": _STRING}),
                },
                "huntingSeries": {"type": "array", "items": _STRING},
            }
        ),
        "NewGroup": _schema(
            {"prefix": _STRING, "contact": _STRING, **_GROUP_FLAGS, "relay": _RELAY_MODE},
            ["prefix", "contact"],
            closed=True,
        ),
        "GroupChange": _schema({"contact": _STRING, **_GROUP_FLAGS, "relay": _RELAY_MODE}, closed=True),
        "ChangedGroup": _schema({"group": _ref("Group"), "created": newPasswords}),
        "DeletedGroup": _schema({"prefix": _STRING}),
        "Allocation": _schema(
            {"count": {"type": "integer", "minimum": 1}, "kind": {"type": "string", "enum": ["premium", "escoopfone"]}},
            ["count"],
            closed=True,
        ),
        "Allocated": _schema({"members": newPasswords, "huntingSeries": newPasswords}),
        "Member": _schema({"number": _STRING}, ["number"], closed=True),
        "Location": _schema(location),
        "LocationList": _list("locations", "Location"),
        "RemovedLocation": _schema({"removed": _ref("Location")}),
        "Record": _schema(record),
        "RecordPage": _schema(
            {
                "records": {"type": "array", "items": _ref("Record")},
                "total": {"type": "integer", "minimum": 0, "description": "Records the filters select, all pages."},
                "offset": {"type": "integer", "minimum": 0},
                "limit": {"type": "integer", "minimum": 1},
                "next": {
                    "type": ["string", "null"],
                    "description": "The next page's address (path and query), or null on the last page.",
                },
            },
            ["records", "total", "offset", "limit", "next"],
        ),
        "Call": _schema(call),
        "CallList": _list("calls", "Call"),
        "ReleasedCalls": _list("released", "Call"),
        "Stream": _STREAM,
        "RelayLeg": _LEG,
        "RelaySession": _schema(relaySession),
        "RelaySessionList": _schema(
            {
                "relay": {"type": "boolean", "description": "Whether calls are relayed (calls.media_handler)."},
                "nodes": {"type": "array", "items": _STRING},
                "sessions": {"type": "array", "items": _ref("RelaySession")},
            }
        ),
        "ReleasedRelaySessions": _list("released", "RelaySession"),
        "TestLineSession": _schema(testLineSession),
        "TestLineSessionList": _schema(
            {
                "running": {"type": "boolean", "description": "Whether the test line runs (testline.enabled)."},
                "sessions": {"type": "array", "items": _ref("TestLineSession")},
            }
        ),
        "ReleasedTestLineSessions": _list("released", "TestLineSession"),
    }


def schemas() -> dict[str, Any]:
    """Every schema, by name: the errors', the accounts', then L{_runningSchemas}."""
    return {
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
        **_runningSchemas(),
    }
