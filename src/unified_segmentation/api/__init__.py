"""The HTTP API: ``create_app()`` (``api.app``), served by ``useg serve`` (``api.server.run``).

Layout: ``app`` (factory and lifespan), ``routes/`` (one router per resource; translate only), ``schemas``
(request models), ``auth`` (API keys, scopes, rate limits), ``errors`` (one error envelope), ``middleware``
(request id, access log, latency, body limit), ``metrics`` (Prometheus), ``jobs`` (calibration jobs),
``logs`` (JSON lines), ``responses`` (orjson).
"""
