"""
An in-memory L{aetasip.routing.Directory} for routing tests, with the
accounts and groups of the user guide's examples.
"""

from __future__ import annotations

from collections.abc import Iterable

from aetasip.routing import Account, Group


class MemoryDirectory:
    """
    Accounts and groups in dicts.

    @ivar accounts: number to L{Account}.
    @ivar groups: prefix to L{Group}.
    """

    def __init__(self, accounts: Iterable[Account] = (), groups: Iterable[Group] = ()) -> None:
        self.accounts = {account.number: account for account in accounts}
        self.groups = {group.prefix: group for group in groups}

    def account(self, number: str) -> Account | None:
        return self.accounts.get(number)

    def group(self, prefix: str) -> Group | None:
        return self.groups.get(prefix)

    def huntingSeries(self, prefix: str) -> list[str]:
        return sorted(
            number for number, account in self.accounts.items() if account.kind == "hunting" and account.group == prefix
        )

    def add(self, number: str, kind: str = "premium", group: str | None = None) -> Account:
        """Add and return an account."""
        account = self.accounts[number] = Account(number, kind, group)
        return account

    def addGroup(self, prefix: str, **options: bool) -> Group:
        """Add (or replace) and return group C{prefix} with C{options}."""
        group = self.groups[prefix] = Group(prefix, f"tech@{prefix}.example", **options)
        return group


def guideDirectory(**options4567: bool) -> MemoryDirectory:
    """
    The numbers of the guide's examples (section 5): groups 4567 (with
    C{options4567}) and 4599, factory account 902080, test number 15000,
    and a hunting series 45676001-45676003 of group 4567.
    """
    directory = MemoryDirectory()
    directory.addGroup("4567", **options4567)
    directory.addGroup("4599")
    for number in ["45675001", "45675002", "45675412"]:
        directory.add(number, "premium", "4567")
    for number in ["45995002", "45995005", "45995033"]:
        directory.add(number, "premium", "4599")
    for number in ["45676001", "45676002", "45676003"]:
        directory.add(number, "hunting", "4567")
    directory.add("902080", "factory")
    directory.add("15000", "test")
    directory.add("15001", "test")
    return directory
