"""The seeded planted-game generator for tests, the demo and benchmarks.

>>> from unified_segmentation.synth import generate_game
>>> game = generate_game(n_players=200, seed=1)
>>> game.truth.height
200
"""

from unified_segmentation.synth.generator import (
    ANOMALY_KINDS,
    CUSTOM_EVENT_TYPES,
    DAILY_SCHEMA,
    ENGAGEMENT_TIERS,
    EVENT_TYPES,
    EVENTS_SCHEMA,
    MONETIZATION_TIERS,
    OUTCOMES_SCHEMA,
    PLAY_STYLES,
    SOCIAL_TIERS,
    TEMPORAL_TIERS,
    TEST_PLAYER,
    PlantedSpec,
    SyntheticGame,
    generate_daily,
    generate_game,
)

__all__ = [
    "ANOMALY_KINDS",
    "CUSTOM_EVENT_TYPES",
    "DAILY_SCHEMA",
    "ENGAGEMENT_TIERS",
    "EVENTS_SCHEMA",
    "EVENT_TYPES",
    "MONETIZATION_TIERS",
    "OUTCOMES_SCHEMA",
    "PLAY_STYLES",
    "SOCIAL_TIERS",
    "TEMPORAL_TIERS",
    "TEST_PLAYER",
    "PlantedSpec",
    "SyntheticGame",
    "generate_daily",
    "generate_game",
]
