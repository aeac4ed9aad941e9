"""Rollout strategies and deterministic bucketing (DESIGN §4.5).

A player's bucket is a stable hash (BLAKE2b) of ``(salt, game_id, player_id)`` into 10,000 buckets, so the
same player always gets the same system, and ``gradual_rollout`` serves the unified system to buckets
``< percentage × 100`` — raising the percentage only adds players. The shadow sample uses an independent
hash (a derived salt), so who is shadowed does not depend on who is served.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unified_segmentation.errors import InvalidInput

from .legacy import _legacy_model

N_BUCKETS = 10_000
DEFAULT_GRADUAL_PERCENTAGE = 50.0
DEFAULT_SHADOW_SAMPLE = 10.0
_SHADOW_SALT_SUFFIX = "\x1fshadow"

Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]


class Strategy(StrEnum):
    PARALLEL_ONLY = "parallel_only"
    SHADOW_MODE = "shadow_mode"
    GRADUAL_ROLLOUT = "gradual_rollout"
    FULL_ROLLOUT = "full_rollout"


class RolloutConfig(BaseModel):
    """A game's rollout configuration, as stored and as ``PUT …/rollout/{game_id}`` takes it.

    ``percentage`` defaults to 50 under ``gradual_rollout``; under ``shadow_mode`` a given ``percentage`` is
    the shadow sample unless ``shadow_sample`` is given too (default 10). ``legacy`` is the legacy system's
    config (``{"type": "builtin"}`` or ``{"type": "http", "url", ...}``), normalized on validation.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Strategy.PARALLEL_ONLY
    percentage: Percent | None = None
    shadow_sample: Percent = DEFAULT_SHADOW_SAMPLE
    salt: Annotated[str, Field(max_length=200)] = ""
    legacy: dict[str, Any] = Field(default_factory=lambda: {"type": "builtin"})

    @field_validator("legacy")
    @classmethod
    def _legacy(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _legacy_model(v).model_dump()

    @model_validator(mode="after")
    def _defaults(self) -> RolloutConfig:
        if self.strategy == Strategy.SHADOW_MODE and "shadow_sample" not in self.model_fields_set \
                and self.percentage is not None:
            self.shadow_sample = self.percentage
        if self.percentage is None:
            self.percentage = {
                Strategy.PARALLEL_ONLY: 0.0, Strategy.SHADOW_MODE: self.shadow_sample,
                Strategy.GRADUAL_ROLLOUT: DEFAULT_GRADUAL_PERCENTAGE, Strategy.FULL_ROLLOUT: 100.0,
            }[self.strategy]
        return self

    @classmethod
    def parse(cls, data: RolloutConfig | dict[str, Any]) -> RolloutConfig:
        """Validate a dict (e.g. a request body or a stored row); raises ``InvalidInput`` with the errors."""
        if isinstance(data, RolloutConfig):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errs = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()[:10]]
            raise InvalidInput("invalid rollout config: " + "; ".join(f"{e['field']}: {e['message']}"
                                                                      for e in errs), errors=errs) from exc

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def bucket(game_id: str, player_id: str, salt: str = "") -> int:
    """Stable bucket in [0, 10000) of (game, player, salt) — BLAKE2b, identical across processes and runs."""
    key = "\x1f".join((salt, game_id, player_id)).encode("utf-8")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") % N_BUCKETS


def _check_forces(force_unified: bool, force_legacy: bool) -> None:
    if force_unified and force_legacy:
        raise InvalidInput("force_unified and force_legacy are mutually exclusive")


def serves_unified(config: RolloutConfig | dict[str, Any], game_id: str, player_id: str,
                   force_unified: bool = False, force_legacy: bool = False) -> bool:
    """Whether the unified system serves this player (before any fallback)."""
    _check_forces(force_unified, force_legacy)
    if force_unified:
        return True
    if force_legacy:
        return False
    cfg = RolloutConfig.parse(config)
    if cfg.strategy == Strategy.FULL_ROLLOUT:
        return True
    if cfg.strategy == Strategy.GRADUAL_ROLLOUT:
        return bucket(game_id, player_id, cfg.salt) < float(cfg.percentage or 0.0) * 100.0
    return False


def in_shadow_sample(config: RolloutConfig | dict[str, Any], game_id: str, player_id: str) -> bool:
    """Whether the player is in the shadow sample (independent of the serving bucket; ignores the strategy)."""
    cfg = RolloutConfig.parse(config)
    return bucket(game_id, player_id, cfg.salt + _SHADOW_SALT_SUFFIX) < cfg.shadow_sample * 100.0


@dataclass(frozen=True)
class Decision:
    """Who serves, whether the unified system also runs in shadow, and why."""

    unified: bool
    shadow: bool
    reason: str


def decide(config: RolloutConfig | dict[str, Any], game_id: str, player_id: str,
           force_unified: bool = False, force_legacy: bool = False) -> Decision:
    cfg = RolloutConfig.parse(config)
    unified = serves_unified(cfg, game_id, player_id, force_unified, force_legacy)
    shadow = (not unified and cfg.strategy == Strategy.SHADOW_MODE
              and in_shadow_sample(cfg, game_id, player_id))
    if force_unified:
        reason = "force_unified"
    elif force_legacy:
        reason = "force_legacy"
    elif cfg.strategy == Strategy.GRADUAL_ROLLOUT:
        reason = "gradual_rollout:" + ("in" if unified else "out")
    else:
        reason = cfg.strategy.value
    return Decision(unified=unified, shadow=shadow, reason=reason)
