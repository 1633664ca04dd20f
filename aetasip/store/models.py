"""
What the store holds and the rules its values follow: the L{Account} and
L{Group} records, the store's errors, and the one definition of each rule
on a value (a number, a prefix, an e-mail address, a kind, a count, a group
option), used by the store, the provisioning layer and C{aetasip-admin}.

A plain SIP password is never stored: only its digest HA1 values. The
self-care portal password is stored as a salted scrypt hash
(L{hashPortalPassword}).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Mapping

import attrs

from aetasip.auth import ACCOUNT_KINDS, Credentials

NUMBER_PATTERN = re.compile(r"[0-9]{1,32}")

NUMBER_LENGTH = 8
"""Digits of a premium, escoopfone or hunting number."""

PREFIX_LENGTH = 4
"""Digits of a group prefix."""

PREFIX_PATTERN = re.compile(r"[0-9]{4}")

EIGHT_DIGIT_KINDS = frozenset({"premium", "escoopfone", "hunting"})
"""The kinds whose numbers have L{NUMBER_LENGTH} digits."""

MEMBER_KINDS = ("premium", "escoopfone")
"""The kinds of the regular members of a group."""

FIRST_MEMBER = 5001
LAST_MEMBER = 5999
"""The range of the 4 last digits of a group's regular members."""

MAX_ALLOCATION = LAST_MEMBER - FIRST_MEMBER + 1
"""The most numbers one allocation may ask for: a whole sequence."""

HUNTING_NUMBER = 6000
"""The last 4 digits of a group's hunting group number."""

FIRST_HUNTING = 6001
LAST_HUNTING = 6999
"""The range of the 4 last digits of a group's hunting series."""

EMAIL_PATTERN = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

PASSWORD_LENGTH = 20
_PASSWORD_ALPHABET = string.ascii_letters + string.digits

RELAY_MODES = ("auto", "always", "never")
"""The relay modes an account or a group may have (see L{aetasip.relay.decision})."""

INHERIT = "inherit"
"""The relay setting of an account or group that follows its group, or the configuration (stored NULL)."""

GROUP_OPTIONS = {
    "contact": "contact",
    "relay": "relay",
    "incomingBlock": "incoming_block",
    "outgoingBlock": "outgoing_block",
    "hunting": "hunting",
    "quarterlyLog": "quarterly_log",
    "selfCare": "self_care",
}
"""The options of L{aetasip.store.Store.updateGroup}, and their columns."""


# -- errors ---------------------------------------------------------------------


class StoreError(Exception):
    """
    The store cannot do what was asked; C{str()} is a sentence to show.
    """


class InvalidValue(StoreError):
    """
    A value given to the store breaks one of its rules: the caller's
    mistake, which asking again will not mend (C{aetasip-admin} reports it
    as bad usage, an API as a bad request).
    """


class InvalidAccount(InvalidValue):
    """
    An account value (number, kind, password, realm) is not acceptable.
    """


class InvalidGroup(InvalidValue):
    """
    A group value (prefix, contact, option) or a membership is not acceptable.
    """


class AccountExists(StoreError):
    """
    An account with this number already exists.
    """


class NoSuchAccount(StoreError):
    """
    There is no account with this number.
    """


class SchemaTooNew(StoreError):
    """
    The database was migrated by a newer aetasip than this one.
    """


class GroupExists(StoreError):
    """
    A group with this prefix already exists.
    """


class NoSuchGroup(StoreError):
    """
    There is no group with this prefix.
    """


class GroupNotEmpty(StoreError):
    """
    The group still has accounts, so it cannot be deleted.
    """


class GroupFull(StoreError):
    """
    The group's sequence has no room for the numbers asked for.
    """


# -- rules on values ----------------------------------------------------------------


def checkNumber(number: object) -> str:
    """
    @return: C{number} if it is 1 to 32 ASCII digits.
    @raise InvalidAccount: otherwise.
    """
    if not isinstance(number, str) or NUMBER_PATTERN.fullmatch(number) is None:
        raise InvalidAccount(f"invalid number {number!r}: expected 1 to 32 digits")
    return number


def checkKind(kind: object) -> str:
    """
    @return: C{kind} if it is one of L{ACCOUNT_KINDS}.
    @raise InvalidAccount: otherwise.
    """
    if not isinstance(kind, str) or kind not in ACCOUNT_KINDS:
        raise InvalidAccount(f"unknown kind {kind!r}: expected one of {', '.join(ACCOUNT_KINDS)}")
    return kind


def checkMemberKind(kind: object) -> str:
    """
    @return: C{kind} if it is the kind of a group's regular members
        (L{MEMBER_KINDS}): what a group allocates.
    @raise InvalidAccount: otherwise.
    """
    if not isinstance(kind, str) or kind not in MEMBER_KINDS:
        raise InvalidAccount(f"invalid kind {kind!r} for group members: expected one of {', '.join(MEMBER_KINDS)}")
    return kind


def checkAccountNumber(number: object, kind: object) -> str:
    """
    Check C{number} for an account of C{kind}: premium, escoopfone and
    hunting numbers have 8 digits (SPEC "Accounts and numbers"); factory and
    test numbers (C{902080}, C{15000}) only need to be digits.

    @return: C{number}.
    @raise InvalidAccount: otherwise.
    """
    checked = checkNumber(number)
    if checkKind(kind) in EIGHT_DIGIT_KINDS and len(checked) != NUMBER_LENGTH:
        raise InvalidAccount(
            f"invalid {kind} number {checked!r}: premium, escoopfone and hunting numbers have {NUMBER_LENGTH} digits"
        )
    return checked


def checkPrefix(prefix: object) -> str:
    """
    @return: C{prefix} if it is exactly 4 ASCII digits.
    @raise InvalidGroup: otherwise.
    """
    if not isinstance(prefix, str) or PREFIX_PATTERN.fullmatch(prefix) is None:
        raise InvalidGroup(f"invalid group prefix {prefix!r}: expected {PREFIX_LENGTH} digits")
    return prefix


def checkEmail(address: object) -> str:
    """
    The one e-mail rule (a group's contact; an account's address through
    L{checkAccountEmail}), simple but real: a dot-atom local part, and a
    domain of at least two labels of letters, digits and inner hyphens, the
    last one not all digits; at most 254 characters.

    @return: C{address}.
    @raise InvalidGroup: otherwise.
    """
    if not isinstance(address, str) or len(address) > 254 or EMAIL_PATTERN.fullmatch(address) is None:
        raise InvalidGroup(f"invalid e-mail address {address!r}")
    return address


def checkAccountEmail(address: object) -> str:
    """
    An account's contact address: empty (none), or an address that
    L{checkEmail} accepts.

    @return: C{address}.
    @raise InvalidAccount: otherwise.
    """
    if address == "":
        return ""
    try:
        return checkEmail(address)
    except InvalidGroup as e:
        raise InvalidAccount(str(e)) from None


def checkText(what: str, value: object) -> str:
    """
    A free text field of one line, such as a display name.

    @param what: the name of the field, for the message.
    @return: C{value} if it is a string without control characters.
    @raise InvalidAccount: otherwise.
    """
    if not isinstance(value, str):
        raise InvalidAccount(f"invalid {what} {value!r}: expected text")
    if _CONTROL.search(value):
        raise InvalidAccount(f"invalid {what} {value!r}: control characters are not allowed")
    return value


def checkPassword(password: object, what: str = "SIP password") -> str:
    """
    A password given by a person: not empty, without control characters.
    The message never contains the password.

    @param what: the name of the password, for the message.
    @return: C{password}.
    @raise InvalidAccount: otherwise.
    """
    if not isinstance(password, str) or not password:
        raise InvalidAccount(f"the {what} must not be empty")
    if _CONTROL.search(password):
        raise InvalidAccount(f"the {what} must not contain control characters")
    return password


def checkCount(count: object) -> int:
    """
    @return: C{count} if it is an integer from 1 to L{MAX_ALLOCATION}: how
        many numbers one allocation may create.
    @raise InvalidGroup: otherwise.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ALLOCATION:
        raise InvalidGroup(f"invalid count {count!r}: expected 1 to {MAX_ALLOCATION}")
    return count


def checkFlag(name: str, value: object) -> bool:
    """
    @return: C{value} if it is C{True} or C{False}: the value of the on/off
        group option C{name}.
    @raise InvalidGroup: otherwise.
    """
    if not isinstance(value, bool):
        raise InvalidGroup(f"invalid value {value!r} for {name}: expected True or False")
    return value


def checkGroupOptions(options: Mapping[str, object]) -> dict[str, object]:
    """
    Check the options to change on a group: names of L{GROUP_OPTIONS},
    C{contact} an e-mail address, the others on/off.

    @return: C{options}, as a new dictionary.
    @raise InvalidGroup: when there are none, or one is unknown or bad.
    """
    if not options:
        raise InvalidGroup("nothing to change")
    checked: dict[str, object] = {}
    for name, value in options.items():
        if name not in GROUP_OPTIONS:
            raise InvalidGroup(f"unknown group option {name!r}: expected one of {', '.join(GROUP_OPTIONS)}")
        if name == "contact":
            checked[name] = checkEmail(value)
        elif name == "relay":
            checked[name] = checkRelay(value, InvalidGroup)
        else:
            checked[name] = checkFlag(name, value)
    return checked


def checkRelay(value: object, error: type[InvalidValue] = InvalidAccount) -> str:
    """
    @return: C{value} if it is a relay mode (L{RELAY_MODES}) or L{INHERIT}.
    @raise InvalidValue: (C{error}) otherwise.
    """
    if not isinstance(value, str) or value not in (*RELAY_MODES, INHERIT):
        raise error(f"invalid relay mode {value!r}: expected one of {', '.join((*RELAY_MODES, INHERIT))}")
    return value


def storedRelay(value: str | None) -> str | None:
    """The column value of a relay setting: C{None} for L{INHERIT}."""
    return None if value in (None, INHERIT) else value


def generatePassword() -> str:
    """
    A random SIP password of L{PASSWORD_LENGTH} letters and digits (some 119
    bits), easy to type on a codec's front panel.
    """
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


# -- portal password hashes -------------------------------------------------------

# Cost of the scrypt hash (16 MiB, some 50 ms); stored in each hash, so it can grow.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LENGTH = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hashPortalPassword(password: str) -> str:
    """
    Hash C{password} with scrypt and a random salt.

    @return: C{scrypt$n=N,r=R,p=P$SALT$HASH}, salt and hash in base64: the
        parameters travel with the hash, so they can change later.
    """
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_LENGTH
    )
    return f"scrypt$n={_SCRYPT_N},r={_SCRYPT_R},p={_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verifyPortalPassword(encoded: str, password: str) -> bool:
    """
    Whether C{password} matches C{encoded} (from L{hashPortalPassword}),
    compared in constant time. A malformed C{encoded} matches nothing.
    """
    try:
        scheme, parameters, salt64, digest64 = encoded.split("$")
        values = dict(item.split("=", 1) for item in parameters.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt = base64.b64decode(salt64, validate=True)
        expected = base64.b64decode(digest64, validate=True)
    except (ValueError, KeyError):
        return False
    if scheme != "scrypt" or not expected:
        return False
    try:
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=256 * 1024 * 1024
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


@functools.cache
def dummyPortalHash() -> str:
    """
    A hash checked when there is no account or no portal password, so that
    a refusal takes as long as a wrong password and does not reveal which
    numbers exist. Made on first use: it costs a scrypt.
    """
    return hashPortalPassword(secrets.token_urlsafe(16))


# -- records ----------------------------------------------------------------------


@attrs.frozen
class Account:
    """
    One row of the C{accounts} table.

    @ivar number: the account number, 1 to 32 digits.
    @ivar kind: one of L{ACCOUNT_KINDS}.
    @ivar displayName: the subscriber's name for this account, or C{""}.
    @ivar email: contact e-mail address, or C{""}.
    @ivar realm: the digest realm the HA1 values were computed in.
    @ivar ha1MD5: hex HA1 for digest MD5.
    @ivar ha1SHA256: hex HA1 for digest SHA-256.
    @ivar portalPasswordHash: from L{hashPortalPassword}, or C{None} when the
        account has no portal password.
    @ivar createdAt: POSIX time of creation.
    @ivar updatedAt: POSIX time of the last change.
    @ivar group: the prefix of the group it belongs to, or C{None}.
    @ivar relay: its relay mode (L{RELAY_MODES}), or C{None}: its group's.
    """

    number: str
    kind: str
    displayName: str
    email: str
    realm: str
    ha1MD5: str
    ha1SHA256: str
    portalPasswordHash: str | None
    createdAt: float
    updatedAt: float
    group: str | None = None
    relay: str | None = None

    def credentials(self) -> Credentials:
        """
        The digest credentials of this account.
        """
        return Credentials(self.number, self.kind, self.realm, {"MD5": self.ha1MD5, "SHA-256": self.ha1SHA256})


@attrs.frozen
class Group:
    """
    One row of the C{groups} table: a subscriber's group of premium numbers
    (guide section 5).

    @ivar prefix: the 4-digit prefix; members are prefix + 5001, 5002, …
    @ivar contact: the technical contact's e-mail address.
    @ivar incomingBlock: calls from outside the group to it are refused.
    @ivar outgoingBlock: calls from the group to outside it are refused.
    @ivar hunting: prefix + 6000 hunts the series prefix + 6001, 6002, …
    @ivar quarterlyLog: a call log is sent to the contact every quarter.
    @ivar selfCare: the members may use the self-care portal.
    @ivar nextMember: the last 4 digits of the next member to allocate,
        after every number ever assigned in the group.
    @ivar nextHunting: the same for the hunting series.
    @ivar createdAt: POSIX time of creation.
    @ivar updatedAt: POSIX time of the last change.
    @ivar relay: its members' relay mode (L{RELAY_MODES}), or C{None}: the
        configuration's (C{relay.mode}).
    """

    prefix: str
    contact: str
    incomingBlock: bool
    outgoingBlock: bool
    hunting: bool
    quarterlyLog: bool
    selfCare: bool
    nextMember: int
    nextHunting: int
    createdAt: float
    updatedAt: float
    relay: str | None = None

    @property
    def huntingNumber(self) -> str:
        """
        The hunting group number, prefix + 6000.
        """
        return f"{self.prefix}{HUNTING_NUMBER}"


def checkMembership(number: str, kind: str, group: Group) -> None:
    """
    Check that the account C{number} of C{kind} may belong to C{group}:
    premium and escoopfone accounts from prefix + 5001 to 5999, hunting
    accounts from prefix + 6001 to 6999 in a group with hunting on.

    @raise InvalidAccount: otherwise.
    """
    prefix = group.prefix
    if kind not in (*MEMBER_KINDS, "hunting"):
        raise InvalidAccount(
            f"a {kind} account cannot belong to a group: only premium, escoopfone and hunting accounts do"
        )
    hunting = kind == "hunting"
    low, high = (FIRST_HUNTING, LAST_HUNTING) if hunting else (FIRST_MEMBER, LAST_MEMBER)
    inside = len(number) == NUMBER_LENGTH and number.startswith(prefix) and low <= int(number[PREFIX_LENGTH:]) <= high
    if not inside:
        series = "hunting series" if hunting else "sequence"
        raise InvalidAccount(f"{number} is not in the {series} of group {prefix}: {prefix}{low} to {prefix}{high}")
    if hunting and not group.hunting:
        raise InvalidAccount(f"group {prefix} has hunting off: hunting account {number} cannot belong to it")
