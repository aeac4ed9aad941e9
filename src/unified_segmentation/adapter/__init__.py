"""Integration adapter: legacy plug-ins, rollout strategies, shadow comparison, migration validation.

Pure of storage and HTTP wiring (DESIGN §4.5): systems come in as callables / ``LegacySystem`` objects and
results go out as plain dicts; the services and API layers persist and expose them.
"""

from .compare import (
    classify,
    cohens_kappa,
    compare,
    flags_at_share,
    kappa_at_equal_share,
    match_names_by_axis,
    match_segment_names,
    similarity,
    threshold_for_share,
)
from .legacy import (
    BuiltinLegacy,
    CircuitBreaker,
    HttpLegacy,
    LegacyError,
    LegacyInvalidResponse,
    LegacyPool,
    LegacySystem,
    LegacyUnavailable,
    legacy_from_config,
    redact_legacy_config,
    validate_legacy_config,
)
from .profile import AnomalyFlags, CompatProfile, unified_to_compat
from .rollout import Decision, RolloutConfig, Strategy, bucket, decide, in_shadow_sample, serves_unified
from .router import ProfileRouter, ShadowRecord
from .validator import shadow_report, validate

__all__ = [
    "AnomalyFlags", "BuiltinLegacy", "CircuitBreaker", "CompatProfile", "Decision", "HttpLegacy", "LegacyError",
    "LegacyInvalidResponse", "LegacyPool", "LegacySystem", "LegacyUnavailable", "ProfileRouter", "RolloutConfig",
    "ShadowRecord", "Strategy", "bucket", "classify", "cohens_kappa", "compare", "decide", "flags_at_share",
    "in_shadow_sample", "kappa_at_equal_share", "legacy_from_config", "match_names_by_axis", "match_segment_names",
    "redact_legacy_config", "serves_unified", "shadow_report", "similarity", "threshold_for_share",
    "unified_to_compat", "validate", "validate_legacy_config",
]
