"""
The web side of the service: L{WebService} serves, on its own listen
address (C{web.listen}), the health check, the Prometheus metrics and the
admin API.

    - L{settings}: the C{web} section of the configuration;
    - L{health}: C{/health}, what runs and whether the store answers;
    - L{metrics}: C{/metrics}, a Prometheus collector over the live counters;
    - L{api}: the admin API (C{/api/v1/...}), bearer tokens, JSON errors;
    - L{openapi}: the OpenAPI description of the admin API;
    - L{service}: L{WebService}, the listening socket in the service tree.
"""
