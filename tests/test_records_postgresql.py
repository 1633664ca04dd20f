"""
Call records on a real PostgreSQL (L{tests.postgres}): the cases of
L{tests.test_records_store}, each test with a new database.
"""

from __future__ import annotations

from tests import test_records_store
from tests.test_store_postgresql import PostgreSQLURLs


class PostgreSQLCallRecordStoreTests(PostgreSQLURLs, test_records_store.CallRecordStoreTests):
    """Writing, recovering and reading call records on PostgreSQL."""


class PostgreSQLRecordQueryTests(PostgreSQLURLs, test_records_store.RecordQueryTests):
    """The queries on call records on PostgreSQL."""
