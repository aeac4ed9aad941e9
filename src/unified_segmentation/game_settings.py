"""Per-game settings (DESIGN §3): stored per game, with defaults; pure data, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidInput


def _default_multipliers() -> dict[str, float]:
    return {"weekday": 1.0, "weekend": 1.0, "holiday": 1.25}


@dataclass
class GameSettings:
    timezone: str = "UTC"
    holiday_country: str | None = None
    profile_days: int = 28
    current_days: int = 7
    typical_days: int = 28
    min_k: int = 2
    max_k: int = 8
    alarm_rate: float = 0.004
    context_multipliers: dict[str, float] = field(default_factory=_default_multipliers)
    default_as_of: str | None = None
    raw_event_retention_days: int = 400
    n0: float = 7.0
    min_typical_days: float = 7.0
    min_silhouette: float = 0.20
    min_segment_share: float = 0.003
    min_segment_members: int = 20
    sample_size: int = 200_000
    n_init: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise InvalidInput(f"timezone: unknown IANA time zone {self.timezone!r}", field="timezone") from exc
        if self.holiday_country is not None:
            import holidays

            if self.holiday_country.upper() not in holidays.list_supported_countries():
                raise InvalidInput(f"holiday_country: unsupported country {self.holiday_country!r}",
                                   field="holiday_country")
            self.holiday_country = self.holiday_country.upper()
        for name in ("profile_days", "current_days", "typical_days", "raw_event_retention_days"):
            if int(getattr(self, name)) < 1:
                raise InvalidInput(f"{name}: must be >= 1", field=name)
        if not 2 <= int(self.min_k) <= int(self.max_k) <= 20:
            raise InvalidInput("min_k/max_k: need 2 <= min_k <= max_k <= 20", field="min_k")
        if not 0 < float(self.alarm_rate) < 0.5:
            raise InvalidInput("alarm_rate: must be in (0, 0.5)", field="alarm_rate")
        if self.default_as_of is not None:
            try:
                datetime.fromisoformat(str(self.default_as_of))
            except ValueError as exc:
                raise InvalidInput("default_as_of: not an ISO-8601 time", field="default_as_of") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GameSettings:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidInput(f"unknown setting(s): {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        return cls(**d)

    def updated(self, **changes: Any) -> GameSettings:
        d = self.to_dict()
        d.update(changes)
        return GameSettings.from_dict(d)

    @staticmethod
    def parse_assignments(pairs: list[str]) -> dict[str, Any]:
        """``key=value`` strings (CLI) -> typed dict; values parsed as JSON when possible."""
        import json

        out: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(GameSettings)}
        for pair in pairs:
            if "=" not in pair:
                raise InvalidInput(f"expected key=value, got {pair!r}")
            k, v = pair.split("=", 1)
            k = k.strip()
            if k not in types:
                raise InvalidInput(f"unknown setting {k!r}", field=k)
            try:
                val: Any = json.loads(v)
            except json.JSONDecodeError:
                val = v
            if v.lower() in ("null", "none", ""):
                val = None
            out[k] = val
        return out
