"""
The blocking side of the C{ldap} authentication backend: ldap3
connections to the directory servers (TCP, TLS verified, bind), pooled
for reuse, and the search of an account's entry (L{LDAPDirectory}). Call
it in a thread: ldap3 blocks.
"""

from __future__ import annotations

import ipaddress
import ssl
import threading

from ldap3 import AUTO_BIND_NONE, LEVEL, NONE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCertificateError, LDAPException
from ldap3.utils.conv import escape_filter_chars

from aetasip.auth import BackendUnavailable
from aetasip.auth.ldapsettings import LDAPSettings

# One search result: the entry's DN, and its attributes (names lower-cased)
# with their raw values.
Entry = tuple[str, dict[str, list[bytes]]]


def _isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class VerifyingTLS(Tls):  # type: ignore[misc]
    """
    TLS for ldap3 (LDAPS and StartTLS) that verifies the server: its
    certificate chain against C{caFile} (or the system's trust store), then
    with C{service_identity} that the certificate names the host of the
    server's URL (DNS name or IP address, RFC 6125). A failure raises
    L{LDAPCertificateError} before anything (the bind password first of
    all) is sent.
    """

    def __init__(self, caFile: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=caFile)

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        """
        Replace C{connection}'s socket with a verified TLS one; ldap3 calls
        this for ldaps:// at connection and for StartTLS. The handshake is
        always done here, whatever C{do_handshake} says: the certificate
        must be checked now.
        """
        from cryptography import x509
        from service_identity import CertificateError, VerificationError
        from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address

        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_certs_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The name is checked below with service_identity, after the chain.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        host = connection.server.host.strip("[]")
        address = _isAddress(host)
        wrapped = context.wrap_socket(connection.socket, server_hostname=None if address else host)
        try:
            certificate = x509.load_der_x509_certificate(wrapped.getpeercert(binary_form=True) or b"")
            if address:
                verify_certificate_ip_address(certificate, host)
            else:
                verify_certificate_hostname(certificate, host)
        except VerificationError:
            wrapped.close()
            raise LDAPCertificateError(f"the certificate of the directory does not name {host}") from None
        except (CertificateError, ValueError) as e:
            wrapped.close()
            raise LDAPCertificateError(f"the certificate of the directory is unusable: {e}") from None
        connection.socket = wrapped


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _unbind(connection: Connection) -> None:
    """Unbind C{connection} if the directory still listens; close its socket anyway."""
    try:
        connection.unbind()
    except Exception:  # a dead connection: nothing to tell the directory
        pass
    sock = getattr(connection, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


class LDAPDirectory:
    """
    The blocking side: ldap3 connections to the directory servers, kept
    for reuse. L{search} blocks: call it in a thread. A connection is used
    by one thread at a time, so the pool holds at most as many connections
    as threads call L{search} at once.

    @ivar searches: the searches sent so far.
    @ivar connections: the connections opened (and bound) so far.
    """

    def __init__(self, settings: LDAPSettings) -> None:
        self.settings = settings
        self._tls = VerifyingTLS(settings.caCertificate)
        self.searches = 0
        self.connections = 0
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def search(self, number: str) -> list[Entry]:
        """
        The entries the filter finds for C{number} (at most two: more than
        one is an error the caller reports).

        @raise BackendUnavailable: when no server answers.
        """
        query = self.settings.filter.replace("{number}", escape_filter_chars(number))
        connection = self._takeIdle()
        if connection is not None:
            try:
                return self._searchOn(connection, query)
            except (LDAPException, OSError) as e:
                if isinstance(e, TimeoutError):
                    raise BackendUnavailable(f"LDAP search timed out: {_describe(e)}") from None
                # The directory closed this pooled connection (restart, idle
                # timeout): once more on a new one.
        connection = self._connect()
        try:
            return self._searchOn(connection, query)
        except (LDAPException, OSError) as e:
            raise BackendUnavailable(f"LDAP search failed: {_describe(e)}") from None

    @property
    def idleConnections(self) -> int:
        """The connections waiting for the next search."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        """
        Unbind the idle connections; connections in use are unbound when
        their search ends. A later L{search} opens connections again.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            _unbind(connection)

    def _takeIdle(self) -> Connection | None:
        with self._lock:
            self._closed = False  # in use again after close()
            return self._idle.pop() if self._idle else None

    def _giveBack(self, connection: Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(connection)
                return
        _unbind(connection)

    def _connect(self) -> Connection:
        """
        A connection bound to the first server that accepts it: TCP, TLS
        verified (ldaps:// or StartTLS), bind.

        @raise BackendUnavailable: with every server's reason.
        """
        settings = self.settings
        problems = []
        for useSSL, host, port in settings.servers:
            # A new Server each time: ldap3 marks the addresses of a server
            # that failed as unavailable for a while, and a Server is not
            # shared between threads.
            server = Server(
                host, port=port, use_ssl=useSSL, tls=self._tls, get_info=NONE, connect_timeout=settings.timeout
            )
            connection = Connection(
                server,
                user=settings.bindDN,
                password=settings.bindPassword,
                client_strategy=SYNC,
                auto_bind=AUTO_BIND_NONE,
                read_only=True,
                receive_timeout=settings.timeout,
                raise_exceptions=False,
                check_names=False,
                auto_referrals=False,
            )
            try:
                connection.open(read_server_info=False)
                if settings.startTLS and not server.ssl and not connection.start_tls(read_server_info=False):
                    problems.append(f"{server.name}: StartTLS refused")
                elif connection.bind(read_server_info=False):
                    with self._lock:
                        self.connections += 1
                    return connection
                else:
                    result = connection.result or {}
                    who = settings.bindDN or "anonymous"
                    problems.append(f"{server.name}: bind as {who} refused ({result.get('description', 'no answer')})")
            except (LDAPException, OSError) as e:
                problems.append(f"{server.name}: {_describe(e)}")
            except BaseException:
                _unbind(connection)
                raise
            _unbind(connection)
        raise BackendUnavailable("no LDAP server available: " + "; ".join(problems))

    def _searchOn(self, connection: Connection, query: str) -> list[Entry]:
        settings = self.settings
        try:
            with self._lock:
                self.searches += 1
            connection.search(
                settings.base,
                query,
                search_scope=SUBTREE if settings.scope == "subtree" else LEVEL,
                attributes=settings.attributes,
                size_limit=2,
                time_limit=settings.timeout,
            )
            result = connection.result
            if result is None:
                raise BackendUnavailable(f"{connection.server.name} did not answer the search")
            # 4: sizeLimitExceeded, the filter matches several entries.
            if result["result"] not in (0, 4):
                detail = f"{result['description']} {result.get('message') or ''}".strip()
                raise BackendUnavailable(f"{connection.server.name} refused the search under {settings.base}: {detail}")
            entries = [
                (str(item["dn"]), {name.lower(): list(values) for name, values in item["raw_attributes"].items()})
                for item in connection.response or []
                if item.get("type") == "searchResEntry"
            ]
        except BaseException:
            _unbind(connection)
            raise
        self._giveBack(connection)
        return entries
