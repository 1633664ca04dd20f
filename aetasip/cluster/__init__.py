"""
Several aetasip servers on one PostgreSQL store: a cluster of an active
server, which holds the floating service address, and standbys.

    - L{listener}: L{NotificationListener}, PostgreSQL C{LISTEN} in a
      thread of its own, delivering notifications to the reactor;
    - L{locationsync}: L{LocationSync}, which applies the bindings other
      servers change to this server's L{aetasip.location.LocationService}.
"""
