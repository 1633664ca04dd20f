"""
The SQL store: accounts, groups, registrations and shared secrets, on
SQLite or PostgreSQL.

    - L{models}: the records (L{Account}, L{Group}), the errors and the
      rules on values, written once for the store, provisioning and the CLI;
    - L{schema}: the tables and their versioned migrations;
    - L{engine}: the engines for a C{store.url} (SQLite, PostgreSQL);
    - L{sql}: L{Store}, synchronous; its group methods are in L{groups},
      its conversions between rows and records in L{rows};
    - L{facade}: L{AsyncStore}, the store in threads, for the service;
    - L{service}: L{StoreService}, which opens and closes it;
    - L{provisioning}: L{Provisioning}, what C{aetasip-admin} and the admin
      API change.

Everything other modules use is importable from here.
"""

from __future__ import annotations

from aetasip.store.engine import engineURL
from aetasip.store.facade import AsyncStore, inThreads
from aetasip.store.models import (
    EIGHT_DIGIT_KINDS,
    EMAIL_PATTERN,
    FIRST_HUNTING,
    FIRST_MEMBER,
    GROUP_OPTIONS,
    HUNTING_NUMBER,
    LAST_HUNTING,
    LAST_MEMBER,
    MAX_ALLOCATION,
    MEMBER_KINDS,
    NUMBER_LENGTH,
    NUMBER_PATTERN,
    PASSWORD_LENGTH,
    PREFIX_LENGTH,
    PREFIX_PATTERN,
    Account,
    AccountExists,
    Group,
    GroupExists,
    GroupFull,
    GroupNotEmpty,
    InvalidAccount,
    InvalidGroup,
    InvalidValue,
    NoSuchAccount,
    NoSuchGroup,
    SchemaTooNew,
    StoreError,
    checkAccountEmail,
    checkAccountNumber,
    checkCount,
    checkEmail,
    checkFlag,
    checkGroupOptions,
    checkKind,
    checkMemberKind,
    checkMembership,
    checkNumber,
    checkPassword,
    checkPrefix,
    checkRelay,
    checkText,
    generatePassword,
    hashPortalPassword,
    verifyPortalPassword,
)
from aetasip.store.provisioning import Allocation, NewAccount, NewPassword, Provisioning
from aetasip.store.schema import MIGRATIONS, SCHEMA_VERSION, metadata
from aetasip.store.service import StoreService
from aetasip.store.sql import SECRET_LENGTH, Store

__all__ = [
    "EIGHT_DIGIT_KINDS",
    "EMAIL_PATTERN",
    "FIRST_HUNTING",
    "FIRST_MEMBER",
    "GROUP_OPTIONS",
    "HUNTING_NUMBER",
    "LAST_HUNTING",
    "LAST_MEMBER",
    "MAX_ALLOCATION",
    "MEMBER_KINDS",
    "MIGRATIONS",
    "NUMBER_LENGTH",
    "NUMBER_PATTERN",
    "PASSWORD_LENGTH",
    "PREFIX_LENGTH",
    "PREFIX_PATTERN",
    "SCHEMA_VERSION",
    "SECRET_LENGTH",
    "Account",
    "AccountExists",
    "Allocation",
    "AsyncStore",
    "Group",
    "GroupExists",
    "GroupFull",
    "GroupNotEmpty",
    "InvalidAccount",
    "InvalidGroup",
    "InvalidValue",
    "NewAccount",
    "NewPassword",
    "NoSuchAccount",
    "NoSuchGroup",
    "Provisioning",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoreService",
    "checkAccountEmail",
    "checkAccountNumber",
    "checkCount",
    "checkEmail",
    "checkFlag",
    "checkGroupOptions",
    "checkKind",
    "checkMemberKind",
    "checkMembership",
    "checkNumber",
    "checkPassword",
    "checkPrefix",
    "checkRelay",
    "checkText",
    "engineURL",
    "generatePassword",
    "hashPortalPassword",
    "inThreads",
    "metadata",
    "verifyPortalPassword",
]
