"""
aetasip reference configuration: every key, with its default value.

Use:  twistd -n aetasip --config /etc/aetasip/aetasip.conf.py

The file is Python. Each section is a dict assigned to a top-level name;
keep only the keys you change. Unknown sections or keys stop the start
with a message naming them, and so does any value of the wrong kind.
The command line (--listen, --domain, --sip-port, --store, --realm) wins
over the file.
"""

# -- This server -----------------------------------------------------------
server = {
    # Name of this server in logs, events and the User-Agent/Server header.
    # Default: this machine's host name.
    # 'name': 'sip1.example.net',
}

# -- SIP transports and domains --------------------------------------------
sip = {
    # Addresses SIP listens on. '::' (all IPv6 addresses) is skipped with a warning on
    # hosts without IPv6.
    "listen": ["0.0.0.0", "::"],
    # UDP ports (5070 is the alternate port for routers that mangle 5060).
    "udp_ports": [5060, 5070],
    # TCP ports.
    "tcp_ports": [5060, 5070],
    # TLS port, used only when sip.tls_certificate is set.
    "tls_port": 5061,
    # PEM file with the certificate chain for SIP over TLS.
    "tls_certificate": None,
    # PEM file with the private key (defaults to the certificate file).
    "tls_key": None,
    # Domain names and addresses this service answers for, all one user space. The
    # machine's own names and listen addresses are always added.
    "domains": [],
    # Digest realm. Changing it invalidates every stored HA1: set it once, before adding
    # accounts.
    "realm": "aetasip",
    # Largest SIP message accepted, in bytes.
    "max_message_size": 65535,
    # Receive and send buffer of each SIP UDP socket, in bytes: room for the datagrams
    # that arrive while the server is busy, instead of losing them to retransmissions.
    # Above net.core.rmem_max it is forced when aetasip has CAP_NET_ADMIN (root
    # outside a container), else capped by the kernel.
    "udp_buffer_size": 4194304,
    # Seconds after which a TCP/TLS connection that carries a binding is closed when it
    # sends nothing (no message, no keep-alive).
    "tcp_idle_timeout": 3600,
    # The same for a connection that carries no binding (no REGISTER made one over it).
    # Bytes of an unfinished message do not count as activity.
    "tcp_unbound_timeout": 120,
    # Seconds a peer may take from the first byte of a message to its last; a slower one
    # is closed (slowloris).
    "tcp_message_timeout": 10,
    # Most TCP/TLS connections open at once, all ports together; more are closed at once.
    # Keep it below the unit's LimitNOFILE.
    "tcp_max_connections": 10000,
    # Most TCP/TLS connections open at once from one source address (an IPv6 /64).
    "tcp_max_per_source": 100,
    # Bytes waiting for a peer that stopped reading beyond which its connection is closed
    # (reading from it stops as soon as the send buffer is full).
    "tcp_max_backlog": 1048576,
}

# -- Digest authentication -------------------------------------------------
auth = {
    # Authentication backends, asked in order; the first that knows a number answers.
    "backends": ["sql"],
    # Digest algorithms offered, one challenge each, in this order. Many agents (older
    # codec firmware, sipp) answer only the first challenge and only know MD5, so MD5
    # comes first by default; put SHA-256 first when every agent of the fleet supports RFC
    # 8760.
    "algorithms": ["MD5", "SHA-256"],
    # Agents, by a case-insensitive fragment of their User-Agent, that get the MD5
    # challenge alone: they fail when offered an algorithm they do not know (baresip 1.0
    # refuses the whole registration when a SHA-256 challenge comes with the MD5 one). A
    # number that has authenticated with SHA-256 is held to it whatever its User-Agent
    # says (in this process's memory).
    "md5_only_agents": ["baresip"],
    # Seconds a nonce is accepted; older ones get stale=true.
    "nonce_lifetime": 300,
    # Path of the accounts file read by the 'file' backend.
    "file": None,
    # Settings of third-party authentication backends, by backend name, e.g. {'example':
    # {...}}; each backend reads its own entry.
    "options": {},
    # Seconds the 'sql' backend reuses the credentials it read (0: ask the store every
    # time). A password changed with aetasip-admin applies within this time; an unknown
    # number is remembered 5 s at most.
    "cache_ttl": 60,
    # Numbers whose credentials the 'sql' backend keeps; past it the least recently used
    # is dropped.
    "cache_size": 10000,
    # Numbers the 'sql' backend may be waiting for the store for at once; beyond, requests
    # get 503 with Retry-After at once instead of queueing without bound (a storm while
    # the database is slow).
    "max_pending": 1000,
    # Failed authentications (wrong password, unknown number, another user's credentials)
    # one source may make for one number within auth.failure_window before that source is
    # banned for that number.
    "failures_per_account": 10,
    # Failed authentications one source (an IPv6 /64) may make, whatever the numbers,
    # within auth.failure_window before it is banned. Several codecs behind one NAT share
    # it.
    "failures_per_source": 30,
    # Seconds over which failed authentications are counted.
    "failure_window": 300,
    # Seconds a source banned for failed authentications is refused (403, no challenge);
    # the ban then expires.
    "ban_time": 600,
}

# -- Flood control (before parsing; Kamailio's pike) -------------------------
flood = {
    # SIP messages one source (an IPv6 /64) may send within flood.window seconds; beyond,
    # it is banned (0: no flood control).
    "limit": 40,
    # Seconds of the sliding window flood.limit counts over.
    "window": 2,
    # Seconds a flooding source's messages are dropped unparsed; the ban then expires by
    # itself.
    "ban_time": 300,
    # Sources never counted nor banned: the operator's networks, the backup server, load
    # generators.
    "trusted": ["127.0.0.0/8", "::1/128"],
}

# -- Registrar -------------------------------------------------------------
registrar = {
    # Shortest registration accepted (shorter ones get 423 Interval Too Brief).
    "min_expires": 60,
    # Longest registration granted; longer requests are shortened.
    "max_expires": 3600,
    # Expiry of a contact whose REGISTER names none.
    "default_expires": 3600,
    # Most contacts one number may have bound at once.
    "max_contacts": 10,
    # When a second agent registers a number already registered by another: 'reject' it
    # (403), 'replace' the other agent's bindings, or 'allow' both (calls fork). Always
    # logged and raised as a 'conflict' event.
    "conflict": "reject",
    # Seconds between OPTIONS pings to UDP agents to keep their NAT open (0: off).
    "options_ping_interval": 0,
}

# -- LDAP authentication backend (auth.backends = ["ldap"]) ----------------
ldap = {
    # Directory servers of the 'ldap' backend, ldap://HOST[:PORT] or
    # ldaps://HOST[:PORT], tried in order: the next one when a server is down, refuses
    # the bind or fails TLS.
    "urls": [],
    # DN the service binds as (None: anonymous bind).
    "bind_dn": None,
    # Password of ldap.bind_dn.
    "bind_password": None,
    # DN under which accounts are searched; required by the 'ldap' backend.
    "base": None,
    # Search the whole subtree under ldap.base, or 'one' level only.
    "scope": "subtree",
    # Search filter; {number} stands for the SIP number, escaped (RFC 4515). It must
    # match one entry.
    "filter": "(uid={number})",
    # Attribute holding the SIP password in clear text (None: use the HA1 attributes
    # only). Hashed values ('{SSHA}...') cannot serve digest authentication: such
    # accounts are refused, with a warning.
    "password_attribute": "userPassword",
    # Attribute holding the hex MD5 HA1, MD5(number ':' sip.realm ':' password); it wins
    # over the password.
    "ha1_md5_attribute": None,
    # Attribute holding the hex SHA-256 HA1, computed like the MD5 one; it wins over the
    # password.
    "ha1_sha256_attribute": None,
    # Attribute holding the account kind (None: ldap.default_kind).
    "kind_attribute": None,
    # Kind of the accounts without a kind attribute (or with an unknown kind, logged).
    "default_kind": "premium",
    # Upgrade ldap:// connections with StartTLS before binding.
    "starttls": False,
    # PEM file of the CA certificates trusted for StartTLS and ldaps:// (None: the
    # system's trust store). The server's certificate must also name the host of its URL.
    "ca_certificate": None,
    # Seconds a directory may take to connect or to answer before it counts as down (503
    # for the codec).
    "timeout": 5,
    # Connections to the directory, each used by one thread at a time.
    "pool_size": 4,
    # Seconds an answer of the directory is reused (0: ask it every time); an unknown
    # number is remembered 5 s at most.
    "cache_ttl": 60,
}

# -- Store (accounts, bindings) --------------------------------------------
store = {
    # The store: a SQLite file (relative to the working directory) or a PostgreSQL URL;
    # a PostgreSQL URL may name several servers, libpq-style
    # (postgresql://USER:PASSWORD@HOST1:5432,HOST2:5432/DATABASE?target_session_attrs=read-write):
    # each new connection goes to the first that accepts writes. Servers on one PostgreSQL
    # store form a cluster: each keeps the others' registrations (README.rst, "Backup server").
    "url": "sqlite:///aetasip.db",
}

# -- Cluster: a backup server (README.rst, "Backup server") ------------------
cluster = {
    # The floating service address (moved between the servers by keepalived): the server
    # that has it on an interface is active and sends OPTIONS keep-alive pings and dead-call
    # probes; the others are standbys. List it in sip.listen too: it is bound even where it
    # is not local (IP_FREEBIND). None: this server is always active.
    "address": None,
    # Seconds between two looks at whether the floating address is local.
    "check_interval": 1.0,
    # Seconds between two announcements of this server in the store (role, calls in
    # progress; shown by 'aetasip-admin node status'), and two looks at its drain flag.
    # Announced with them: the other servers take this one for dead after three of its
    # own intervals, so servers may differ.
    "announce_interval": 5.0,
}

# -- Registration webhooks (README.rst, "Registration webhook") ------------
notify = {
    # URLs every registration event is POSTed to, as signed JSON (empty: no webhooks).
    "urls": [],
    # HMAC-SHA256 key signing each POST (X-Aetasip-Signature); required when
    # notify.urls is set.
    "secret": None,
    # Events sent. 'refreshed' (every re-REGISTER of a codec) is off by default: it is
    # by far the most frequent.
    "events": ["registered", "unregistered", "expired", "conflict"],
    # PEM file of the CA certificates trusted for https:// URLs (default: the system's
    # trust store).
    "ca_certificate": None,
    # Seconds a POST may take, from connecting to the end of the answer.
    "timeout": 10,
    # Events waiting per URL; when full, the oldest are dropped (and counted).
    "queue_size": 1000,
    # Attempts per event and URL (the first included) before it is given up; any answer
    # but 2xx is a failure.
    "max_attempts": 10,
    # Seconds before the first retry; the delay doubles at each further retry up to
    # notify.max_backoff.
    "retry_delay": 1,
    # Longest delay between two attempts, in seconds.
    "max_backoff": 60,
    # Seconds a stopping service keeps delivering queued events; what is left then is
    # logged as lost.
    "shutdown_grace": 5,
}

# -- Call routing (README.rst, "Call routing") ------------------------------
routing = {
    # Routing policies a call goes through, in order; the first refusal answers the
    # call. 'numberplan' resolves short numbers, 'hunting' expands hunting group
    # numbers, 'blocking' applies the groups' incoming/outgoing call blocking, 'exists'
    # refuses unknown numbers (404); third-party plugins add more.
    "policies": ["numberplan", "hunting", "blocking", "exists"],
    # The test number: open to groups with outgoing-call blocking.
    "test_number": "15000",
    # Length of a short number: dialled by a member of a group, it reaches the group's
    # prefix + these digits.
    "short_number_digits": 4,
    # Hunting group number, after the group's prefix (45676000 for group 4567, or 6000
    # dialled inside it).
    "hunting_number": "6000",
    # Seconds each member of a hunting series rings before the call moves on to the
    # next one.
    "hunting_ring_time": 20,
    # Settings of third-party routing policies, by policy name, e.g.
    # {"example": {...}}; each policy reads its own entry.
    "options": {},
}

# -- Calls (README.rst, "Calls") --------------------------------------------
calls = {
    # Seconds between the in-dialog OPTIONS sent to both parties of an answered call
    # (0: none). A party that answers 408 or 481, or not before the next probe, is
    # gone: the call is released (BYE to both, end cause 'dead dialog'). With 30 s, a
    # call whose codec lost power ends within 90 s.
    "probe_interval": 30,
    # Seconds after which an answered call is released (BYE to both, end cause
    # 'duration limit'); 0: no limit (broadcast links may run for days).
    "max_duration": 0,
    # Smallest RFC 4028 session interval accepted: an INVITE asking for less gets 422
    # with this Min-SE (or has it raised when its sender does not know session
    # timers). A session not refreshed within its interval is released as a dead
    # dialog.
    "min_session_expires": 90,
    # Dialogs kept in memory; past this the oldest are forgotten (their calls go on:
    # in-dialog requests are still routed by the signed token in their Route).
    "max_dialogs": 100000,
    # Secret key signing the dialog tokens of Record-Route. None: a random key kept in
    # the store, shared by every server on the same store, so calls survive a restart
    # or a switch to a backup server.
    "dialog_key": None,
    # Call observers (plugins providing ICallObserverFactory), told when calls start,
    # ring, are answered and end. 'records' (on by default) keeps a record of every
    # call attempt in the store; 'log' logs calls.
    "observers": ["records"],
    # The media handler (a plugin providing IMediaHandlerFactory) that sees every SDP
    # offer and answer; None: SDP passes untouched and media flows directly between
    # the agents.
    "media_handler": None,
}

# -- RTP relay (calls.media_handler = "relay") ----------------------------------
relay = {
    # When a call's media goes through the relay: 'auto' when a leg needs it (its SDP
    # or Contact address is not the address its signalling comes from: NAT, a private
    # address, STUN not used), 'always', or 'never'. A group's or an account's own
    # setting (aetasip-admin account update/group set --relay) wins over this; a call
    # is relayed when either leg's decision says so.
    "mode": "auto",
    # The relay nodes by name, each a dict with its 'kind' and options. 'builtin' (this
    # process): 'address' (bound; default '0.0.0.0'), 'advertise' (written in SDP;
    # default: 'address', else the first specific address of sip.listen), 'ports'
    # ([low, high], default [55004, 55999]: even RTP / odd RTCP pairs). 'rtpengine'
    # (media through rtpengine daemons, README.rst "Media relay on rtpengine"): 'ng'
    # (the ng control addresses of its daemons, 'IP:PORT' or '[IPv6]:PORT', new calls
    # spread over those that answer), 'timeout' (seconds before a request is sent
    # again; default 1.0), 'retries' (before a daemon is marked down; default 2),
    # 'recheck_interval' (seconds between the pings of a daemon marked down; default
    # 10), 'max_pending' (requests waiting at once, past which calls get 503; default
    # 1000), 'keepalive' (seconds without a packet or a request after which a call's
    # last offer and answer are sent again, so that rtpengine's --timeout and
    # --silent-timeout do not delete a call on hold; default 30, 0: never). Example: {"local": {"kind": "builtin"}, "fr": {"kind": "rtpengine", "ng":
    # ["192.0.2.10:2223", "192.0.2.11:2223"]}}
    "nodes": {"local": {"kind": "builtin"}},
    # The node relaying calls whose caller's registrar domain is not in relay.domains.
    "default_node": "local",
    # Registrar domain -> node name: a call is relayed by the node of the domain its
    # caller registered with (e.g. {'sip.aeta-audio.fr': 'fr'}); the callee's domain
    # has no influence.
    "domains": {},
    # Seconds without a media packet (RTP or RTCP) from either party after which an
    # answered relayed call is released (BYE to both, end cause 'media timeout'),
    # unless it is on hold (no media section negotiated to carry media both ways:
    # a=inactive, a=sendonly/a=recvonly, c=0.0.0.0); 0: never.
    "media_timeout": 60,
}

# -- The test line (README.rst, "The test line") -----------------------------
testline = {
    # Answer the test number (routing.test_number, default 15000) and the echo
    # line inside the service: no account and no registration needed.
    "enabled": True,
    # The echo line's number: it returns the caller's own audio (RTP); open to
    # groups with outgoing-call blocking, as the test number is. None: no echo line.
    "echo_number": "15001",
    # Seconds a test line rings before it answers.
    "ring_time": 1.0,
    # Seconds after which a test line session ends with a BYE (long tests are
    # discouraged).
    "max_duration": 600,
    # Seconds without an RTP or RTCP packet from the caller after which the test
    # line hangs up (BYE); 0: never.
    "media_timeout": 10,
    # Sessions a line (the programme, the echo) takes at once; further callers get
    # 486 Busy Here.
    "max_sessions": 20,
    # Calls a caller may make to the test lines in an hour; beyond, 486 Busy Here
    # with a Retry-After. 0: no limit.
    "calls_per_hour": 30,
    # An audio file (any format FFmpeg decodes: WAV, FLAC, MP3, ...) the test line
    # plays, looped, instead of its generated programme (a 1 kHz tone at -18 dBFS
    # and a channel identification).
    "programme_file": None,
    # Address the test line's RTP ports are bound to (an ephemeral port per session).
    "media_address": "0.0.0.0",
    # Address written in the test line's SDP answers: default media_address if
    # specific, else the first specific address of sip.listen of its family, else
    # 127.0.0.1 (reachable from this host only: set it, or relay the calls, for
    # callers elsewhere).
    "advertise": None,
}

# -- Call records (README.rst, "Call records") -------------------------------
records = {
    # This server's name in its call records; None: server.name (the host name), cut
    # to 64 characters. Every server writing to the same store needs its own: at
    # start-up a server closes the records it left open when it died ('unknown end').
    "server": None,
    # Seconds between two notes in the store that this server and its open calls are
    # alive: after a crash, its open calls are closed at the last such note (or the
    # last record written, if later).
    "heartbeat_interval": 10,
    # Call records kept in memory while the store cannot be written (an outage); past
    # this, new records are dropped, counted and logged. Records wait in order and are
    # written when the store returns.
    "queue_limit": 100000,
}

# -- Mail: quarterly call logs, service information (README.rst) ------------
mail = {
    # The SMTP server (submission) that sends the quarterly call logs and service
    # information; None: mail waits in the outbox (in the store) until one is
    # configured.
    "smtp_host": None,
    # Its port (587: submission with STARTTLS).
    "smtp_port": 587,
    # Require STARTTLS, checking the server's certificate against mail.ca_certificate
    # (else the system's trust roots) and mail.smtp_host. False: plain SMTP (only to a
    # relay on this machine).
    "starttls": True,
    # PEM file of the authority that signed the SMTP server's certificate; None: the
    # system's trust roots.
    "ca_certificate": None,
    # SMTP AUTH user name; None: no authentication.
    "username": None,
    # SMTP AUTH password (with mail.username).
    "password": None,
    # The From address of every message; required to send mail.
    "from_address": None,
    # Seconds an SMTP conversation may take before it is abandoned.
    "timeout": 60,
    # Seconds before the first new attempt after a failure; each following one waits
    # twice as long, up to mail.retry_max_delay.
    "retry_delay": 60,
    # The longest wait between two attempts.
    "retry_max_delay": 3600,
    # Attempts before a message is given up (logged as an error, kept in the outbox as
    # failed).
    "max_attempts": 48,
    # Seconds between two looks at the outbox for messages queued by aetasip-admin or
    # another server.
    "poll_interval": 30,
}

# -- STUN server (RFC 8489, RFC 5780) --------------------------------------
stun = {
    # Run the STUN server.
    "enabled": True,
    # Addresses the STUN server listens on.
    "listen": ["0.0.0.0", "::"],
    # STUN port, UDP and TCP.
    "port": 3478,
    # Second STUN port: enables RFC 5780 NAT behaviour discovery.
    "alternate_port": None,
    # Second address for RFC 5780 (CHANGE-REQUEST change-IP).
    "alternate_address": None,
    # Requests per second answered per source address (0: no limit).
    "rate_limit": 50,
}

web = {
    # Address and TCP port of the web service: /health, /metrics, the admin API
    # (/api/v1/, described at /api/v1/openapi.json). '127.0.0.1:8080', '[::1]:8080';
    # None: no web service. HTTPS when tls_certificate is set.
    "listen": "127.0.0.1:8080",
    # Address and TCP port of the admin API's own listener (e.g. on a management
    # network): the API is then served there only, /api/v1/ on listen answers 404.
    # HTTPS with tls_certificate when set; the same bearer tokens. None: the API
    # is served on listen.
    "admin_listen": None,
    # PEM file of the certificate (and its key unless tls_key is set): HTTPS.
    "tls_certificate": None,
    # PEM file of the certificate's private key, when it is a file of its own.
    "tls_key": None,
    # Bearer tokens of the admin API (at least 32 characters, e.g. from
    # 'openssl rand -hex 32'); kept in memory as SHA-256 digests only. Tokens
    # kept in the store ('aetasip-admin token add NAME') are accepted too.
    # Neither: the admin API refuses every request.
    "admin_tokens": [],
    # UNIX socket serving the admin API without a token, for aetasip-admin's
    # commands on the running service (call, relay, testline, location remove).
    # Created mode 0600 (filesystem permissions are the authorization), replaced
    # when stale, removed at stop. Relative to the working directory; set an
    # absolute path, e.g. '/var/lib/aetasip/aetasip.sock'. None: no socket.
    "control_socket": "aetasip.sock",
}

# -- self-care portal (/portal/ on the web service) ------------------------
portal = {
    # Who may log in (with a portal password): 'by group' (members of a group
    # whose self-care option is off may not; accounts outside groups may) or
    # 'every account' (the groups' option is not looked at).
    "self_care": "by group",
    # Time zone of the times the portal shows, e.g. 'Europe/Paris' (its CSV
    # downloads are in UTC).
    "time_zone": "UTC",
    # The portal's public address, for the password reset links it mails, e.g.
    # 'https://sip.example.net/portal/'. None: the web service's own address.
    "url": None,
    # Seconds a mailed password reset link stays valid (it also works only
    # once). Resets need mail (mail.smtp_host and mail.from_address).
    "reset_lifetime": 3600,
}
