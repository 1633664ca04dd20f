"""
The test cases of L{tests.test_groups} (groups in the store, their
migration and the C{aetasip-admin group} commands) on a real PostgreSQL,
each test with a new database on the server that L{tests.postgres} starts.
"""

from __future__ import annotations

from tests import test_groups
from tests.test_store_postgresql import PostgreSQLURLs


class PostgreSQLGroupTests(PostgreSQLURLs, test_groups.GroupTests):
    """
    Groups on PostgreSQL.
    """


class PostgreSQLAllocationTests(PostgreSQLURLs, test_groups.AllocationTests):
    """
    Allocation and hunting series on PostgreSQL.
    """


class PostgreSQLNumberRuleTests(PostgreSQLURLs, test_groups.NumberRuleTests):
    """
    Number and membership rules on PostgreSQL.
    """


class PostgreSQLGroupMigrationTests(PostgreSQLURLs, test_groups.GroupMigrationTests):
    """
    Migration of a version 1 database on PostgreSQL.
    """


class PostgreSQLGroupAdminTests(PostgreSQLURLs, test_groups.GroupAdminTests):
    """
    The C{aetasip-admin group} commands on PostgreSQL.
    """


class PostgreSQLAsyncGroupTests(PostgreSQLURLs, test_groups.AsyncGroupTests):
    """
    The group methods of L{AsyncStore} on PostgreSQL.
    """
