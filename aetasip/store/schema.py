"""
The store's tables and their migrations (the engines that reach the
database are in L{aetasip.store.engine}).

The schema is versioned: the C{schema_version} table holds the number of
the last migration step applied, and L{migrate} applies the missing steps
of L{MIGRATIONS} in the caller's transaction, serialised between processes
(a write lock on SQLite, an advisory lock on PostgreSQL). A schema newer
than this code knows is refused with L{SchemaTooNew}.

The tables below are the current schema, used by the queries. Each
migration step creates or alters tables with its own definitions, frozen
as they were at its version: never change a step once released, add one.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from twisted.logger import Logger

from aetasip.store.models import SchemaTooNew

log = Logger()


metadata = sa.MetaData()

schemaVersion = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("number", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("realm", sa.Text, nullable=False),
    sa.Column("ha1_md5", sa.String(32), nullable=False),
    sa.Column("ha1_sha256", sa.String(64), nullable=False),
    sa.Column("portal_password_hash", sa.Text, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("group_prefix", sa.String(4), nullable=True, index=True),
    sa.Column("relay", sa.String(8), nullable=True),
)

# No foreign key from accounts: the store checks membership in its write
# transactions, and the row of a group is locked while its members change.
groups = sa.Table(
    "groups",
    metadata,
    sa.Column("prefix", sa.String(4), primary_key=True),
    sa.Column("contact", sa.Text, nullable=False),
    sa.Column("incoming_block", sa.Boolean, nullable=False),
    sa.Column("outgoing_block", sa.Boolean, nullable=False),
    sa.Column("hunting", sa.Boolean, nullable=False),
    sa.Column("quarterly_log", sa.Boolean, nullable=False),
    sa.Column("self_care", sa.Boolean, nullable=False),
    sa.Column("next_member", sa.Integer, nullable=False),
    sa.Column("next_hunting", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("relay", sa.String(8), nullable=True),
)

# No foreign key to accounts: numbers of other backends (file, LDAP) register too.
bindings = sa.Table(
    "bindings",
    metadata,
    sa.Column("aor", sa.String(32), primary_key=True),
    sa.Column("contact", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.Double, nullable=False, index=True),
    sa.Column("call_id", sa.Text, nullable=False),
    sa.Column("cseq", sa.Integer, nullable=False),
    sa.Column("transport", sa.String(8), nullable=False),
    sa.Column("source_host", sa.Text, nullable=False),
    sa.Column("source_port", sa.Integer, nullable=False),
    sa.Column("local_host", sa.Text, nullable=False),
    sa.Column("local_port", sa.Integer, nullable=False),
    sa.Column("instance", sa.Text, nullable=True),
    sa.Column("reg_id", sa.Integer, nullable=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("user_agent", sa.Text, nullable=False),
    sa.Column("q", sa.Double, nullable=True),
    sa.Column("registered_at", sa.Double, nullable=False),
    # The origin of the server that wrote the row ("" for aetasip-admin).
    sa.Column("origin", sa.String(32), nullable=False, server_default=""),
)

# Random keys shared by every server on one store (see Store.secret).
storedSecrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)


# One row per call attempt (see aetasip.records): ended_at and end_cause
# are NULL while the call is open.
callRecords = sa.Table(
    "call_records",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("server", sa.String(64), nullable=False),
    sa.Column("call_id", sa.Text, nullable=False),
    sa.Column("caller_tag", sa.Text, nullable=False),
    sa.Column("callee_tag", sa.Text, nullable=True),
    sa.Column("caller", sa.String(32), nullable=False, index=True),
    sa.Column("caller_kind", sa.String(16), nullable=False),
    sa.Column("domain", sa.Text, nullable=False),
    sa.Column("source_host", sa.Text, nullable=False),
    sa.Column("source_port", sa.Integer, nullable=False),
    sa.Column("transport", sa.String(8), nullable=False),
    sa.Column("dialled", sa.String(64), nullable=False, index=True),
    sa.Column("resolved", sa.Text, nullable=False),
    sa.Column("callee", sa.String(32), nullable=True, index=True),
    sa.Column("callee_host", sa.Text, nullable=True),
    sa.Column("callee_port", sa.Integer, nullable=True),
    sa.Column("callee_transport", sa.String(8), nullable=True),
    sa.Column("started_at", sa.Double, nullable=False, index=True),
    sa.Column("ringing_at", sa.Double, nullable=True),
    sa.Column("answered_at", sa.Double, nullable=True),
    sa.Column("ended_at", sa.Double, nullable=True, index=True),
    sa.Column("duration", sa.Double, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("end_cause", sa.String(32), nullable=True),
    sa.Column("end_detail", sa.Text, nullable=False),
    sa.Column("recovered", sa.Boolean, nullable=False),
    sa.Column("relay_node", sa.String(64), nullable=True),
    sa.Column("media", sa.Text, nullable=True),
)

# The last time each server knew its open calls alive (its heartbeat).
recordServers = sa.Table(
    "record_servers",
    metadata,
    sa.Column("server", sa.String(64), primary_key=True),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
)

# Mail waiting to be sent, and mail sent (see aetasip.records.outbox).
mailOutbox = sa.Table(
    "mail_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("message", sa.LargeBinary, nullable=False),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Double, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("sent_at", sa.Double, nullable=True),
    sa.Index("ix_mail_outbox_state_next", "state", "next_attempt_at"),
)

# Which quarterly call log was made for which group and quarter: never twice.
quarterlyLogs = sa.Table(
    "quarterly_logs",
    metadata,
    sa.Column("group_prefix", sa.String(4), primary_key=True),
    sa.Column("quarter", sa.String(6), primary_key=True),
    sa.Column("mail_id", sa.Integer, nullable=True),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

# The servers of a cluster: what each announced last, and its drain flag.
clusterNodes = sa.Table(
    "cluster_nodes",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("address", sa.Text, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("holds_work", sa.Boolean, nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False),
    sa.Column("drain_requested", sa.Boolean, nullable=False),
    # Its name in the call records (records.server).
    sa.Column("records_server", sa.String(64), nullable=False, server_default=""),
    # Its cluster.announce_interval: the others judge its silence by it (0: not said).
    sa.Column("announce_interval", sa.Double, nullable=False, server_default="0"),
)


# Bearer tokens of the admin API kept in the store (aetasip-admin token add):
# only the SHA-256 digest of each, in hexadecimal, never the token.
adminTokens = sa.Table(
    "admin_tokens",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("last_used", sa.Double, nullable=True),
)


# -- migrations -------------------------------------------------------------------


def _migration1(connection: sa.Connection) -> None:
    """
    Version 1: accounts and bindings.
    """
    v1 = sa.MetaData()
    sa.Table(
        "accounts",
        v1,
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("realm", sa.Text, nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("portal_password_hash", sa.Text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    sa.Table(
        "bindings",
        v1,
        sa.Column("aor", sa.String(32), primary_key=True),
        sa.Column("contact", sa.Text, primary_key=True),
        sa.Column("expires_at", sa.Double, nullable=False, index=True),
        sa.Column("call_id", sa.Text, nullable=False),
        sa.Column("cseq", sa.Integer, nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("source_host", sa.Text, nullable=False),
        sa.Column("source_port", sa.Integer, nullable=False),
        sa.Column("local_host", sa.Text, nullable=False),
        sa.Column("local_port", sa.Integer, nullable=False),
        sa.Column("instance", sa.Text, nullable=True),
        sa.Column("reg_id", sa.Integer, nullable=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("user_agent", sa.Text, nullable=False),
        sa.Column("q", sa.Double, nullable=True),
        sa.Column("registered_at", sa.Double, nullable=False),
    )
    v1.create_all(connection)


def _migration2(connection: sa.Connection) -> None:
    """
    Version 2: groups, and the group of each account. Existing accounts
    join no group: only an allocation or an explicit attachment does.
    """
    v2 = sa.MetaData()
    sa.Table(
        "groups",
        v2,
        sa.Column("prefix", sa.String(4), primary_key=True),
        sa.Column("contact", sa.Text, nullable=False),
        sa.Column("incoming_block", sa.Boolean, nullable=False),
        sa.Column("outgoing_block", sa.Boolean, nullable=False),
        sa.Column("hunting", sa.Boolean, nullable=False),
        sa.Column("quarterly_log", sa.Boolean, nullable=False),
        sa.Column("self_care", sa.Boolean, nullable=False),
        sa.Column("next_member", sa.Integer, nullable=False),
        sa.Column("next_hunting", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    v2.create_all(connection)
    connection.exec_driver_sql("ALTER TABLE accounts ADD COLUMN group_prefix VARCHAR(4)")
    connection.exec_driver_sql("CREATE INDEX ix_accounts_group_prefix ON accounts (group_prefix)")


def _migration3(connection: sa.Connection) -> None:
    """
    Version 3: secrets, random keys by name that every server on the store
    shares (the key of the proxy's signed Record-Route tokens).
    """
    v3 = sa.MetaData()
    sa.Table(
        "secrets",
        v3,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    v3.create_all(connection)


def _migrationRelay(connection: sa.Connection) -> None:
    """
    The relay mode of accounts and groups (C{auto}, C{always}, C{never};
    NULL: the group's, else the configuration's).
    """
    connection.exec_driver_sql("ALTER TABLE accounts ADD COLUMN relay VARCHAR(8)")
    connection.exec_driver_sql("ALTER TABLE groups ADD COLUMN relay VARCHAR(8)")


def _migrationCallRecords(connection: sa.Connection) -> None:
    """
    Call records (one row per call attempt), the heartbeat of each server
    that writes them (to close, after a crash, the calls it left open),
    the mail outbox and the ledger of quarterly call logs.
    """
    m = sa.MetaData()
    sa.Table(
        "call_records",
        m,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("call_id", sa.Text, nullable=False),
        sa.Column("caller_tag", sa.Text, nullable=False),
        sa.Column("callee_tag", sa.Text, nullable=True),
        sa.Column("caller", sa.String(32), nullable=False, index=True),
        sa.Column("caller_kind", sa.String(16), nullable=False),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("source_host", sa.Text, nullable=False),
        sa.Column("source_port", sa.Integer, nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("dialled", sa.String(64), nullable=False, index=True),
        sa.Column("resolved", sa.Text, nullable=False),
        sa.Column("callee", sa.String(32), nullable=True, index=True),
        sa.Column("callee_host", sa.Text, nullable=True),
        sa.Column("callee_port", sa.Integer, nullable=True),
        sa.Column("callee_transport", sa.String(8), nullable=True),
        sa.Column("started_at", sa.Double, nullable=False, index=True),
        sa.Column("ringing_at", sa.Double, nullable=True),
        sa.Column("answered_at", sa.Double, nullable=True),
        sa.Column("ended_at", sa.Double, nullable=True, index=True),
        sa.Column("duration", sa.Double, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("end_cause", sa.String(32), nullable=True),
        sa.Column("end_detail", sa.Text, nullable=False),
        sa.Column("recovered", sa.Boolean, nullable=False),
        sa.Column("relay_node", sa.String(64), nullable=True),
        sa.Column("media", sa.Text, nullable=True),
    )
    sa.Table(
        "record_servers",
        m,
        sa.Column("server", sa.String(64), primary_key=True),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
    )
    sa.Table(
        "mail_outbox",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message", sa.LargeBinary, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("sent_at", sa.Double, nullable=True),
        sa.Index("ix_mail_outbox_state_next", "state", "next_attempt_at"),
    )
    sa.Table(
        "quarterly_logs",
        m,
        sa.Column("group_prefix", sa.String(4), primary_key=True),
        sa.Column("quarter", sa.String(6), primary_key=True),
        sa.Column("mail_id", sa.Integer, nullable=True),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    m.create_all(connection)


BINDINGS_CHANNEL = "aetasip_bindings"
"""
The PostgreSQL notification channel on which every change of a row of
C{bindings} is announced (see L{_migrationClusterNotify}).
"""

NODES_CHANNEL = "aetasip_nodes"
"""
The PostgreSQL notification channel on which C{aetasip-admin node drain}
tells the servers to look at their drain flag at once.
"""

CALLS_CHANNEL = "aetasip_calls"
"""
The PostgreSQL notification channel on which a server tells the others
that a call another server set up ended on it (its BYE came there after a
switch): the server that set it up, drained, ends its own copy.
"""

ORIGIN_SETTING = "aetasip.origin"
"""
The PostgreSQL setting a writer of bindings sets for its transaction (to
its node's random origin): the notification carries it, so a node can
ignore its own changes.
"""


def _migrationClusterNotify(connection: sa.Connection) -> None:
    """
    On PostgreSQL, a trigger announces every insert, update and delete of
    a binding with C{NOTIFY aetasip_bindings}, its payload the JSON
    C{{"origin": ..., "aor": ...}}: C{origin} is the writer's
    C{aetasip.origin} setting (empty for C{aetasip-admin}). PostgreSQL
    sends notifications when the transaction commits, once per distinct
    payload, so a batch of rows makes one per number. Nothing on SQLite
    (a single server).
    """
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(
        """
        CREATE FUNCTION aetasip_binding_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            number TEXT;
        BEGIN
            IF TG_OP = 'DELETE' THEN
                number := OLD.aor;
            ELSE
                number := NEW.aor;
            END IF;
            PERFORM pg_notify(
                'aetasip_bindings',
                json_build_object(
                    'origin', COALESCE(current_setting('aetasip.origin', true), ''),
                    'aor', number
                )::text
            );
            RETURN NULL;
        END;
        $$
        """
    )
    connection.exec_driver_sql(
        "CREATE TRIGGER aetasip_binding_changed AFTER INSERT OR UPDATE OR DELETE ON bindings "
        "FOR EACH ROW EXECUTE FUNCTION aetasip_binding_changed()"
    )


def _migrationClusterNodes(connection: sa.Connection) -> None:
    """
    The servers of a cluster (C{cluster_nodes}): each announces its role,
    calls in progress and whether it does the shared work; an operator's
    drain request waits there for it.
    """
    m = sa.MetaData()
    sa.Table(
        "cluster_nodes",
        m,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("origin", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("holds_work", sa.Boolean, nullable=False),
        sa.Column("draining", sa.Boolean, nullable=False),
        sa.Column("drain_requested", sa.Boolean, nullable=False),
    )
    m.create_all(connection)


def _migrationClusterFailover(connection: sa.Connection) -> None:
    """
    What a server taking over from a dead one needs: which server wrote
    each binding (its origin), and each server's name in the call records.
    """
    connection.exec_driver_sql("ALTER TABLE bindings ADD COLUMN origin VARCHAR(32) NOT NULL DEFAULT ''")
    connection.exec_driver_sql("ALTER TABLE cluster_nodes ADD COLUMN records_server VARCHAR(64) NOT NULL DEFAULT ''")


def _migrationAdminTokens(connection: sa.Connection) -> None:
    """The admin API's bearer tokens kept in the store, as digests (C{admin_tokens})."""
    m = sa.MetaData()
    sa.Table(
        "admin_tokens",
        m,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_used", sa.Double, nullable=True),
    )
    m.create_all(connection)


def _migrationNodeInterval(connection: sa.Connection) -> None:
    """
    Each server's announcement interval in its announcements, so that the
    others judge its silence by its own interval (0: a server of an
    earlier version, judged by the reader's).
    """
    connection.exec_driver_sql(
        "ALTER TABLE cluster_nodes ADD COLUMN announce_interval DOUBLE PRECISION NOT NULL DEFAULT 0"
    )


MIGRATIONS: list[Callable[[sa.Connection], None]] = [
    _migration1,
    _migration2,
    _migration3,
    _migrationRelay,
    _migrationCallRecords,
    _migrationClusterNotify,
    _migrationClusterNodes,
    _migrationClusterFailover,
    _migrationAdminTokens,
    _migrationNodeInterval,
]
"""
The migration steps in order: step I{i} (from 0) brings the schema to
version I{i + 1}.
"""

SCHEMA_VERSION = len(MIGRATIONS)

# Key of the PostgreSQL advisory lock that serialises migrations ("aetasip").
_MIGRATION_LOCK = 0x61657461736970


def readVersion(connection: sa.Connection) -> int:
    """
    The version of the schema in the database (0: empty database).
    """
    if not sa.inspect(connection).has_table("schema_version"):
        return 0
    version = connection.execute(sa.select(schemaVersion.c.version)).scalar()
    return 0 if version is None else int(version)


def migrate(connection: sa.Connection, description: str) -> None:
    """
    Bring the schema up to date in the write transaction of C{connection}.

    @param description: the store, for messages.
    @raise SchemaTooNew: when the schema is newer than L{MIGRATIONS}.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    schemaVersion.create(connection, checkfirst=True)
    version = connection.execute(sa.select(schemaVersion.c.version)).scalar()
    if version is None:
        connection.execute(schemaVersion.insert().values(version=0))
        version = 0
    # Read at each call, not at import: tests add steps.
    steps = MIGRATIONS
    if version > len(steps):
        raise SchemaTooNew(
            f"the store {description} has schema version {version}, but this aetasip knows "
            f"versions up to {len(steps)}: upgrade aetasip"
        )
    for newVersion in range(version + 1, len(steps) + 1):
        steps[newVersion - 1](connection)
        connection.execute(schemaVersion.update().values(version=newVersion))
    if version < len(steps):
        # One line for the whole upgrade (a new store goes through every step).
        if version == 0:
            log.info("Store {store} created at schema version {version}", store=description, version=len(steps))
        else:
            log.info(
                "Store {store} migrated from schema version {old} to {version}",
                store=description,
                old=version,
                version=len(steps),
            )
