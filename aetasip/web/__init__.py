"""
The web side of the service: L{WebService} serves, on its own listen
address (C{web.listen}), the health check, the Prometheus metrics, the
portal and the admin API; L{AdminListenService} serves the admin API alone
on C{web.admin_listen} when that is set.

    - L{settings}: the C{web} section of the configuration;
    - L{health}: C{/health}, what runs and whether the store answers;
    - L{metrics}: C{/metrics}, a Prometheus collector over the live counters;
    - L{api}: the admin API (C{/api/v1/...}), bearer tokens, JSON errors;
    - L{tokens}: the API's bearer tokens kept in the store, as it checks them;
    - L{openapi}: the OpenAPI description of the admin API;
    - L{service}: L{WebService} and L{AdminListenService}, the listening
      sockets in the service tree.
"""
