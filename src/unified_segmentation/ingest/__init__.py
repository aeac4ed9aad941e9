"""Reading events, daily aggregates and outcomes from files, frames and JSON payloads.

Everything is validated before anything is returned: a bad row rejects the whole input with an
``InvalidInput`` naming the first rows and fields (or, with ``skip_invalid=True``, comes back in a
rejects frame).
"""

from unified_segmentation.ingest.daily import read_daily, read_outcomes
from unified_segmentation.ingest.events import (
    EVENTS_SCHEMA,
    derive_event_ids,
    empty_events,
    read_events,
)
from unified_segmentation.ingest.mapping import EVENT_FIELDS, parse_map_options
from unified_segmentation.ingest.online_retail import read_online_retail

__all__ = [
    "EVENTS_SCHEMA",
    "EVENT_FIELDS",
    "derive_event_ids",
    "empty_events",
    "parse_map_options",
    "read_daily",
    "read_events",
    "read_online_retail",
    "read_outcomes",
]
