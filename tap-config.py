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
    # Seconds after which an idle TCP/TLS connection without bindings is closed.
    "tcp_idle_timeout": 3600,
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
    # Seconds a nonce is accepted; older ones get stale=true.
    "nonce_lifetime": 300,
    # Path of the accounts file read by the 'file' backend.
    "file": None,
    # Seconds the 'sql' backend reuses the credentials it read (0: ask the store every
    # time). A password changed with aetasip-admin applies within this time; an unknown
    # number is remembered 5 s at most.
    "cache_ttl": 60,
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

# -- Store (accounts, bindings) --------------------------------------------
store = {
    # The store: a SQLite file (relative to the working directory) or a PostgreSQL URL.
    "url": "sqlite:///aetasip.db",
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
