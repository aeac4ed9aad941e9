"""``useg serve``: uvicorn with the service's settings.

One worker serves the app built here from ``settings``. Several workers each build their own app with
``create_app()`` (factory mode), so the settings travel to them as ``USEG_*`` environment variables, and
``PROMETHEUS_MULTIPROC_DIR`` points them at one fresh directory so that metrics sum across workers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

from unified_segmentation.config import Settings

from .logs import auth_banner, masked_url, uvicorn_log_config

APP_FACTORY = "unified_segmentation.api.app:create_app"


def settings_environment(settings: Settings) -> dict[str, str]:
    """``USEG_*`` variables that rebuild ``settings`` in a worker process."""
    env: dict[str, str] = {"USEG_DATABASE_URL": settings.url}
    for name, value in settings.model_dump().items():
        if name == "database_url" or value is None:
            continue
        env[f"USEG_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def prepare_multiprocess_metrics() -> str:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for this server's workers, removed when the server exits."""
    path = tempfile.mkdtemp(prefix="useg-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": int(settings.port or 8000),
        "log_config": uvicorn_log_config(settings.log_level, settings.log_json),
        "access_log": False,  # the service writes its own JSON access log
        "proxy_headers": True,
        "timeout_graceful_shutdown": 30,
    }


def run(settings: Settings | None = None) -> None:
    """Serve until interrupted (blocking)."""
    import uvicorn

    settings = settings if settings is not None else Settings.load()
    workers = max(1, int(settings.workers))
    print(f"Unified Behavioral Segmentation on http://{settings.host}:{settings.port} "
          f"({workers} worker{'s' if workers > 1 else ''}); database {masked_url(settings.url)}", flush=True)
    print(auth_banner(settings), flush=True)
    if workers == 1:
        from .app import create_app

        uvicorn.run(create_app(settings), **uvicorn_options(settings))
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prepare_multiprocess_metrics()
    os.environ.update(settings_environment(settings))
    uvicorn.run(APP_FACTORY, factory=True, workers=workers, **uvicorn_options(settings))
