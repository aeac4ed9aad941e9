"""Structured logs: one JSON object per line (``USEG_LOG_JSON``), request id on every access line.

The access log (logger ``unified_segmentation.access``) carries ``request_id, method, route, status,
duration_ms`` — the route *template* (``/api/v1/games/{game_id}/settings``), never the raw path,
query string, headers or body, so neither API keys nor player identifiers reach the logs.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from unified_segmentation.config import Settings

ACCESS_LOGGER = "unified_segmentation.access"
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra fields, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}
        return f"{base} {' '.join(f'{k}={v}' for k, v in extras.items())}".rstrip()


def formatter(json_lines: bool) -> logging.Formatter:
    if json_lines:
        return JsonFormatter()
    return _PlainFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """Give the package's loggers one stderr handler (idempotent: re-running replaces it)."""
    logger = logging.getLogger("unified_segmentation")
    for handler in list(logger.handlers):
        if getattr(handler, "_useg", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._useg = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(json_lines))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def uvicorn_log_config(level: str = "INFO", json_lines: bool = True) -> dict[str, Any]:
    """uvicorn's own loggers in the same format (its access log is off: ours replaces it)."""
    fmt = {"()": f"{__name__}.JsonFormatter"} if json_lines else {
        "()": f"{__name__}._PlainFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def masked_url(url: str) -> str:
    """The database URL with its password hidden, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without anything after the scheme
        return url.split("://", 1)[0] + "://***"


def auth_banner(settings: Settings) -> str:
    """The start-up line saying whether API keys are required."""
    if settings.auth_required:
        return f"auth: API keys required (host {settings.host}, USEG_AUTH={settings.auth})"
    return f"auth: OPEN - no API key needed on loopback {settings.host} (set USEG_AUTH=required to require keys)"
