"""Use cases over the database. One ``Services`` per process: engine, sessions, compiled-taxonomy cache.

Every write goes through one unit of work (``unit_of_work``), the only place that commits. Methods are
synchronous; the HTTP API calls them from its threadpool, the CLI directly.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import text

from ..core.taxonomy import GameBehavioralTaxonomy
from ..errors import (
    GameNotFound,
    InvalidInput,
    NoTaxonomy,
    PlayerNotFound,
    TaxonomyNotFound,
    TimezoneLocked,
)
from ..features import events_to_daily, normalize_daily
from ..game_settings import GameSettings
from ..ingest import read_events
from ..pipeline import detection_dict, profile_dict, run_detection, score_profiles
from ..pipeline.anomalies import typical_segments
from ..pipeline.calibrate import calibrate_frames
from ..pipeline.data import align, compute_windows, matrix, resolve_as_of
from ..storage import migrate
from ..storage import repositories as repo
from ..storage._bulk import gc_paused
from ..storage.db import make_engine, normalize_url, session_factory, unit_of_work
from ..storage.repositories import service as srepo
from ..storage.repositories.activity import load_players_daily
from ._common import _check_id, _detection_rows, _local_date
from .migration import MigrationMixin
from .ops import OpsMixin
from .requests import RequestPathMixin

log = logging.getLogger("unified_segmentation.services")
_FLUSH = object()  # queued by ``Services.flush``: the background writer writes what it holds now


class Services(RequestPathMixin, MigrationMixin, OpsMixin):
    """The product's use cases over one database."""

    def __init__(self, database_url: str, *, sslmode: str | None = None, pool_size: int = 4) -> None:
        self.url = normalize_url(database_url)
        self.sslmode = sslmode
        self.engine = make_engine(self.url, sslmode=sslmode, **({"pool_size": pool_size}
                                                                 if self.url.startswith("postgresql") else {}))
        self.Session = session_factory(self.engine)
        self._sqlite = self.url.startswith("sqlite")
        self._tax: dict[tuple[str, int], GameBehavioralTaxonomy] = {}
        self._lock = threading.Lock()
        self._shifts: dict[str, dict] = {}
        self._writes: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self.counters: dict[str, float] = {}
        #: Called (no arguments) after a taxonomy is compiled and cached: the server freezes its heap there.
        self.after_compile: Callable[[], None] | None = None
        self._init_migration()

    # ------------------------------------------------------------------ lifecycle / health
    def close(self) -> None:
        self.router.close(wait=True)
        self.legacy_pool.close()
        self.flush()
        self._stop.set()
        self._close_ops()
        self.engine.dispose()

    def upgrade(self) -> None:
        migrate.upgrade(self.url, sslmode=self.sslmode)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def migrations_at_head(self) -> bool:
        return migrate.is_at_head(self.url, sslmode=self.sslmode)

    @contextmanager
    def _uow(self):
        """The unit of work. On SQLite it takes the single write lock first (waiting on the busy timeout):
        a transaction that reads and then writes could otherwise hit an immediate ``database is locked``
        while the background writer commits."""
        with unit_of_work(self.Session) as session:
            if self._sqlite:
                session.execute(text("DELETE FROM event_keys WHERE 0 = 1"))
            yield session

    # ------------------------------------------------------------------ games and settings
    def _settings(self, session, game_id: str) -> GameSettings:
        game = repo.get_game_or_raise(session, game_id)
        return GameSettings.from_dict(game.settings or {})

    def get_settings(self, game_id: str) -> dict:
        with self.Session() as session:
            return self._settings(session, game_id).to_dict()

    def game_timezone(self, game_id: str) -> str:
        with self.Session() as session:
            game = repo.get_game(session, game_id)
            return (game.settings or {}).get("timezone", "UTC") if game else "UTC"

    def put_settings(self, game_id: str, changes: dict, *, actor: str | None = None) -> dict:
        _check_id(game_id, "game_id")
        with self._uow() as session:
            game = repo.get_game(session, game_id)
            old = GameSettings.from_dict(game.settings if game else {})
            new = old.updated(**changes)
            game = repo.ensure_game(session, game_id, default_settings=GameSettings().to_dict())
            repo.update_settings(session, game_id, new.to_dict())
            if new.timezone != old.timezone and game.newest_event_at is not None:
                self._rederive_daily(session, game_id, new.timezone)
        return new.to_dict()

    def _rederive_daily(self, session, game_id: str, timezone: str) -> None:
        if repo.events_purged(session, game_id):
            raise TimezoneLocked("raw events were purged; the time zone can no longer be changed")
        raw = repo.load_events(session, game_id)
        srepo.delete_event_daily(session, game_id)
        if raw.height:
            repo.upsert_daily(session, game_id, events_to_daily(raw, timezone=timezone), mode="add")
        repo.touch_data_changed(session, game_id)

    def delete_game(self, game_id: str) -> bool:
        """Delete a game and everything stored for it (the demo re-creates ``test_game``)."""
        with self._uow() as session:
            existed = srepo.delete_game(session, game_id)
        with self._lock:
            for key in [k for k in self._tax if k[0] == game_id]:
                del self._tax[key]
            self._shifts.pop(game_id, None)
        return existed

    def count_players(self, game_id: str) -> int:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            return srepo.count_players(session, game_id)

    def primary_segments(self, game_id: str, version: int) -> pl.DataFrame:
        with self.Session() as session:
            return srepo.primary_segments(session, game_id, version)

    # ------------------------------------------------------------------ ingestion
    def ingest_events(self, game_id: str, events: pl.DataFrame | list[dict[str, Any]]) -> dict:
        """Store new events and roll them up, in one transaction. ``events``: a canonical Events frame,
        or JSON rows, read here in the game's time zone (one invalid row rejects them all)."""
        _check_id(game_id, "game_id")
        with self._uow() as session:
            known = repo.game_time_settings(session, game_id)
            if known is None:
                game = repo.ensure_game(session, game_id, default_settings=GameSettings().to_dict())
                known = ((game.settings or {}).get("timezone", "UTC"), (game.settings or {}).get("default_as_of"))
            tz, default_as_of = known
            if not isinstance(events, pl.DataFrame):
                events = read_events(events, timezone=tz)
            # New events stored, exactly those rolled up, the game's data marked changed.
            stored = repo.store_events(session, game_id, events, timezone=tz)
            inserted = stored.inserted
            if inserted and default_as_of is not None and stored.newest_event_at > datetime.fromisoformat(
                    str(default_as_of)):
                repo.update_settings(session, game_id, {"default_as_of": None})
        self.counters["events_ingested"] = self.counters.get("events_ingested", 0) + inserted
        return {"game_id": game_id, "accepted": events.height, "inserted": inserted,
                "duplicates": events.height - inserted}

    def ingest_daily(self, game_id: str, daily: pl.DataFrame) -> dict:
        _check_id(game_id, "game_id")
        daily = normalize_daily(daily)
        with self._uow() as session:
            repo.ensure_game(session, game_id, default_settings=GameSettings().to_dict())
            repo.upsert_daily(session, game_id, daily, mode="replace")
            repo.touch_data_changed(session, game_id)
        return {"game_id": game_id, "accepted": daily.height, "inserted": daily.height, "duplicates": 0}

    def ingest_outcomes(self, game_id: str, outcomes: pl.DataFrame) -> dict:
        _check_id(game_id, "game_id")
        with self._uow() as session:
            repo.ensure_game(session, game_id, default_settings=GameSettings().to_dict())
            repo.upsert_outcomes(session, game_id, outcomes)
            repo.touch_data_changed(session, game_id)
        return {"game_id": game_id, "accepted": outcomes.height, "inserted": outcomes.height, "duplicates": 0}

    # ------------------------------------------------------------------ taxonomy
    def _taxonomy(self, session, game_id: str, version: int | None = None) -> GameBehavioralTaxonomy:
        if version is None:
            version = repo.active_version(session, game_id)
            if version is None:
                repo.get_game_or_raise(session, game_id)
                raise NoTaxonomy(f"game {game_id!r} has no calibrated taxonomy yet; calibrate it first")
        key = (game_id, int(version))
        tax = self._tax.get(key)
        if tax is None:
            d = repo.load_taxonomy(session, game_id, version)
            if d is None:
                repo.get_game_or_raise(session, game_id)
                raise TaxonomyNotFound(f"game {game_id!r} has no taxonomy version {version}")
            tax = GameBehavioralTaxonomy.from_dict(d)
            tax.taxonomy_version = int(version)
            for a in tax.active_axes:
                _ = a.kernel  # compile once
            with self._lock:
                self._tax[key] = tax
            self._compiled()
        return tax

    def _compiled(self) -> None:
        if self.after_compile is not None:
            self.after_compile()

    def taxonomy_object(self, game_id: str, version: int | None = None) -> GameBehavioralTaxonomy:
        with self.Session() as session:
            return self._taxonomy(session, game_id, version)

    def _days_back(self, s: GameSettings, *, calibration: bool) -> int:
        need = max(s.profile_days, s.current_days + s.typical_days)
        if calibration:
            need = max(need, 3 * s.current_days + s.typical_days)
        return need + 1

    def calibrate(self, game_id: str, *, as_of=None, force: bool = False) -> dict:
        with self.Session() as session:
            game = repo.get_game_or_raise(session, game_id)
            s = GameSettings.from_dict(game.settings or {})
            as_of_dt = resolve_as_of(as_of, s)
            active = repo.active_version(session, game_id)
            if active is not None and not force:
                info = srepo.version_info(session, game_id, active)
                unchanged = game.data_changed_at is None or (info and info["created_at"] >= game.data_changed_at)
                if unchanged and (as_of is None or (info and info["as_of"] == as_of_dt)):
                    return self._taxonomy(session, game_id, active).to_dict()
            d = _local_date(as_of_dt, s.timezone)
            daily = repo.load_daily(session, game_id, start=d - timedelta(days=self._days_back(s, calibration=True)),
                                    end=d)
            first = repo.players_first_seen(session, game_id)
            outcomes = repo.load_outcomes(session, game_id)
            previous = self._taxonomy(session, game_id, active) if active is not None else None
        tax = calibrate_frames(daily, game_id=game_id, as_of=as_of_dt, settings=s,
                               outcomes=outcomes if outcomes.height else None, previous=previous, first=first)
        with self._uow() as session:
            tax.taxonomy_version = repo.next_version(session, game_id)
            repo.save_taxonomy(session, game_id, tax.to_dict(), activate=True)
        with self._lock:
            self._tax[(game_id, tax.taxonomy_version)] = tax
        self._compiled()
        return tax.to_dict()

    def get_taxonomy(self, game_id: str, version: int | None = None) -> dict:
        with self.Session() as session:
            return self._taxonomy(session, game_id, version).to_dict()

    def taxonomy_history(self, game_id: str) -> list[dict]:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            return repo.list_versions(session, game_id)

    def rollback(self, game_id: str, version: int | None = None, *, actor: str | None = None) -> dict:
        with self._uow() as session:
            repo.get_game_or_raise(session, game_id)
            active = repo.active_version(session, game_id)
            versions = [v["version"] for v in repo.list_versions(session, game_id)]
            if version is None:
                older = [v for v in versions if active is None or v < active]
                if not older:
                    raise TaxonomyNotFound(f"game {game_id!r} has no version before {active} to roll back to")
                version = max(older)
            if version not in versions:
                raise TaxonomyNotFound(f"game {game_id!r} has no taxonomy version {version}")
            repo.activate_version(session, game_id, version)
        return self.get_taxonomy(game_id, version)

    def diff(self, game_id: str, a: int, b: int) -> dict:
        ta, tb = self.taxonomy_object(game_id, a), self.taxonomy_object(game_id, b)
        out = {"game_id": game_id, "from_version": a, "to_version": b, "axes": {}}
        for axis in tb.axes:
            try:
                old = ta.axis(axis.axis_id)
            except KeyError:
                out["axes"][axis.axis_id] = {"added": True}
                continue
            old_ids = {s.segment_id: s.segment_name for s in old.segments}
            new_ids = {s.segment_id: s.segment_name for s in axis.segments}
            out["axes"][axis.axis_id] = {
                "kept": sorted(set(old_ids) & set(new_ids)),
                "renamed": {i: [old_ids[i], new_ids[i]] for i in set(old_ids) & set(new_ids)
                            if old_ids[i] != new_ids[i]},
                "removed": {i: old_ids[i] for i in set(old_ids) - set(new_ids)},
                "added": {i: new_ids[i] for i in set(new_ids) - set(old_ids)},
                "k": [len(old.segments), len(axis.segments)],
            }
        return out

    # ------------------------------------------------------------------ scoring
    def _player_data(self, session, game_id: str, s: GameSettings, as_of_dt: datetime, player_ids, days: int):
        d = _local_date(as_of_dt, s.timezone)
        return load_players_daily(session, game_id, player_ids, start=d - timedelta(days=days), end=d)

    def _prepare(self, session, game_id, as_of, version=None):
        s = self._settings(session, game_id)
        tax = self._taxonomy(session, game_id, version)
        return s, tax, resolve_as_of(as_of, s)

    def categorize_batch(self, game_id: str, player_ids: list[str], *, as_of=None, compact: bool = False,
                         persist: bool = False, taxonomy_version=None, columnar: bool = False) -> dict:
        """Profiles of many players. ``compact``: primary per axis and the top-7 only; ``columnar``: the
        compact answer as one array per field (``columns``) instead of one object per player."""
        # the cyclic GC paused: a batch builds ~10^5 containers, and a full collection they trigger
        # walks every object of the process (~0.1 s in a server)
        with gc_paused():
            return self._categorize_batch(game_id, player_ids, as_of=as_of, compact=compact, persist=persist,
                                          taxonomy_version=taxonomy_version, columnar=columnar)

    def _categorize_batch(self, game_id: str, player_ids: list[str], *, as_of, compact: bool, persist: bool,
                          taxonomy_version, columnar: bool) -> dict:
        ids = list(dict.fromkeys(player_ids))
        with self.Session() as session:
            s, tax, as_of_dt = self._prepare(session, game_id, as_of, taxonomy_version)
            daily, first = self._player_data(session, game_id, s, as_of_dt, ids, s.profile_days + 1)
        known = set(first["player_id"].to_list())
        errors = [{"player_id": p, "error": "player_not_found"} for p in ids if p not in known]
        ok = [p for p in ids if p in known]
        head = {"game_id": game_id, "taxonomy_version": tax.taxonomy_version, "as_of": as_of_dt.isoformat()}
        if not ok:
            return head | ({"columns": _columnar(tax, None)} if columnar else {"profiles": []}) | {"errors": errors}
        ps = score_profiles(tax, daily, as_of_dt, player_ids=ok, first=first)
        if columnar:
            if persist:
                self._persist_memberships(game_id, tax, ps)
            self.counters["categorizations"] = self.counters.get("categorizations", 0) + len(ps.player_ids)
            self._record_confidence(game_id, ps.confidence)
            return head | {"columns": _columnar(tax, ps), "errors": errors}
        if compact:
            profiles = _compact_profiles(tax, ps, as_of_dt.isoformat())
        else:
            profiles = []
            for i in range(len(ps.player_ids)):
                p = profile_dict(tax, ps, i)
                p["as_of"] = as_of_dt.isoformat()
                profiles.append(p)
        if persist:
            self._persist_memberships(game_id, tax, ps)
        self.counters["categorizations"] = self.counters.get("categorizations", 0) + len(profiles)
        self._record_confidence(game_id, ps.confidence)
        return {"game_id": game_id, "taxonomy_version": tax.taxonomy_version, "as_of": as_of_dt.isoformat(),
                "profiles": profiles, "errors": errors}

    def detect_batch(self, game_id: str, player_ids: list[str], *, as_of=None, persist: bool = False,
                     background: bool = False) -> dict:
        ids = list(dict.fromkeys(player_ids))
        with self.Session() as session:
            s, tax, as_of_dt = self._prepare(session, game_id, as_of)
            daily, first = self._player_data(session, game_id, s, as_of_dt, ids,
                                             s.current_days + s.typical_days + 1)
        known = set(first["player_id"].to_list())
        errors = [{"player_id": p, "error": "player_not_found"} for p in ids if p not in known]
        ok = [p for p in ids if p in known]
        if not ok:
            return {"detections": [], "errors": errors}
        shifts = self._shifts.get(game_id, {}).get("table", {})
        res = run_detection(tax, daily, as_of_dt, player_ids=ok, first=first, shifts=shifts)
        dets = [detection_dict(tax, res, i) | {"as_of": as_of_dt.isoformat()} for i in range(len(ok))]
        if persist:
            rows = _detection_rows(game_id, tax.taxonomy_version, as_of_dt, res, dets)
            if background:
                self._enqueue(("detections", game_id, rows))
            else:
                with self._uow() as session:
                    repo.insert_detections(session, game_id, rows)
        self.counters["detections"] = self.counters.get("detections", 0) + len(dets)
        self.counters["anomalies_flagged"] = self.counters.get("anomalies_flagged", 0) + int(res.is_anomalous.sum())
        return {"detections": dets, "errors": errors}

    # ------------------------------------------------------------------ whole-game batch jobs (CLI)
    def _all_data(self, game_id: str, as_of, days_fn):
        with self.Session() as session:
            s, tax, as_of_dt = self._prepare(session, game_id, as_of)
            d = _local_date(as_of_dt, s.timezone)
            daily = repo.load_daily(session, game_id, start=d - timedelta(days=days_fn(s)), end=d)
            first = repo.players_first_seen(session, game_id)
        return s, tax, as_of_dt, daily, first

    def categorize_all(self, game_id: str, *, as_of=None, chunk: int | None = None, progress=None) -> dict:
        """Score every known player, persist memberships and typical offsets in bulk.

        Players go in chunks of ``chunk`` (in player order) through a three-stage pipeline: one thread
        reads the next chunk's daily rows while this one scores the current chunk and builds its rows
        (conformed, sorted and, on PostgreSQL, encoded for the binary ``COPY``), and a writer thread
        replaces the previous chunk's rows (one unit of work per chunk, as before; it only sends bytes).
        On PostgreSQL the server's read and write work and the scoring thus overlap instead of adding
        up (default chunk 25,000, the first one a quarter of that so the writer starts early); SQLite
        works in this process, so it gets large chunks (100,000). Results do not depend on the chunk size.
        """
        from concurrent.futures import ThreadPoolExecutor

        chunk = chunk or (100_000 if self._sqlite else 25_000)
        t0 = time.perf_counter()
        with self.Session() as session:
            s, tax, as_of_dt = self._prepare(session, game_id, as_of)
            first = repo.players_first_seen(session, game_id)
            pg_types = repo.pg_copy_types(session)
        end = _local_date(as_of_dt, s.timezone)
        start = end - timedelta(days=max(s.profile_days, s.current_days + s.typical_days) + 1)
        ids = first["player_id"].to_list()
        chunk = max(int(chunk), 1)
        # A short first chunk: the writer (the longest stage) starts after a quarter of a chunk's read
        # and scoring instead of a whole one.
        head = min(len(ids), max(chunk // 4, 1))
        parts = [ids[:head]] + [ids[i:i + chunk] for i in range(head, len(ids), chunk)] if ids else []
        timings = {"read_s": 0.0, "score_s": 0.0, "rows_s": 0.0, "write_s": 0.0}

        def read(part: list[str]) -> pl.DataFrame:
            t = time.perf_counter()
            with self.Session() as session:
                # ``part`` is a run of the ids in the database's order: read that run of the key
                daily = repo.load_daily(
                    session, game_id, start=start, end=end, player_ids=part, player_range=(part[0], part[-1])
                )
            timings["read_s"] += time.perf_counter() - t
            return daily

        def write(frame: repo.PreparedRows, offsets: repo.PreparedRows, run: tuple[str, str]) -> int:
            t = time.perf_counter()
            with self._uow() as session:
                # the chunk is a whole run of the game's ids: its stored rows go as one key range
                repo.write_prepared(session, frame, player_range=run)
                repo.write_prepared(session, offsets, player_range=run)
            timings["write_s"] += time.perf_counter() - t
            return frame.height + offsets.height

        rows = 0
        with ThreadPoolExecutor(1, thread_name_prefix="useg-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="useg-write") as writer:
            pending_read = reader.submit(read, parts[0]) if parts else None
            pending_write = None
            for i, part in enumerate(parts):
                sub = pending_read.result()
                pending_read = reader.submit(read, parts[i + 1]) if i + 1 < len(parts) else None
                t = time.perf_counter()
                fpart = first.filter(pl.col("player_id").is_in(pl.Series(part, dtype=pl.String).implode()))
                ps = score_profiles(tax, sub, as_of_dt, first=fpart)
                t1 = time.perf_counter()
                # rows conformed, sorted and (PostgreSQL) encoded here: the writer only sends them
                version = tax.taxonomy_version
                frame = repo.prepare_memberships(game_id, version, membership_rows(tax, ps), pg_types=pg_types)
                offsets = repo.prepare_offsets(
                    game_id, version, typical_offset_rows(tax, sub, fpart, as_of_dt), pg_types=pg_types
                )
                timings["score_s"] += t1 - t
                timings["rows_s"] += time.perf_counter() - t1
                if pending_write is not None:
                    rows += pending_write.result()
                    if progress:
                        progress(len(parts[i - 1]))
                pending_write = writer.submit(write, frame, offsets, (part[0], part[-1]))
            if pending_write is not None:
                rows += pending_write.result()
                if progress:
                    progress(len(parts[-1]))
        dt_s = time.perf_counter() - t0
        return {"game_id": game_id, "taxonomy_version": tax.taxonomy_version, "players": len(ids),
                "rows_written": rows, "seconds": dt_s, "players_per_s": len(ids) / dt_s if dt_s else None,
                "timings": {k: round(v, 3) for k, v in timings.items()}}

    def _persist_memberships(self, game_id, tax, ps, *, daily=None, first=None, as_of_dt=None) -> int:
        frame = membership_rows(tax, ps)
        offsets = None
        if daily is not None:
            offsets = typical_offset_rows(tax, daily, first, as_of_dt)
        with self._uow() as session:
            repo.bulk_write_memberships(session, game_id, tax.taxonomy_version, frame)
            if offsets is not None:
                repo.bulk_write_offsets(session, game_id, tax.taxonomy_version, offsets)
        return frame.height + (offsets.height if offsets is not None else 0)

    def detect_all(self, game_id: str, *, as_of=None, persist: bool = True) -> dict:
        t0 = time.perf_counter()
        s, tax, as_of_dt, daily, first = self._all_data(game_id, as_of,
                                                        lambda s: s.current_days + s.typical_days + 1)
        res = run_detection(tax, daily, as_of_dt, first=first)
        table = {}
        for sh in res.shifts:
            axis = tax.axis(sh["axis"])
            table[(sh["axis"], axis.segment_index(sh["segment_id"]), sh["signal"])] = sh["value"]
        self._shifts[game_id] = {"as_of": as_of_dt.isoformat(), "shifts": res.shifts, "table": table}
        flagged = np.flatnonzero(res.is_anomalous)
        if persist:
            dets = [detection_dict(tax, res, int(i)) for i in flagged]
            rows = _detection_rows(game_id, tax.taxonomy_version, as_of_dt, res, dets, index=flagged)
            with self._uow() as session:
                repo.insert_detections(session, game_id, rows)
        return {"game_id": game_id, "taxonomy_version": tax.taxonomy_version, "players": len(res.player_ids),
                "anomalous": int(len(flagged)), "shifts": res.shifts, "seconds": time.perf_counter() - t0,
                "result": res}

    def list_anomalies(self, game_id: str, *, axis=None, direction=None, min_score=None, since=None,
                       limit: int = 100, cursor=None) -> dict:
        self.flush()
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            page = repo.list_anomalies(session, game_id, axis=axis, direction=direction, min_score=min_score,
                                       since=since, limit=limit, cursor=cursor)
            items = [{"id": d.id, "player_id": d.player_id, "taxonomy_version": d.taxonomy_version,
                      "as_of": d.as_of.isoformat(), "detected_at": d.detected_at.isoformat(),
                      "is_anomalous": d.is_anomalous, "overall_score": d.overall_score, "surprise": d.surprise,
                      "confidence": d.confidence, "context": d.context, "axes": d.axes} for d in page.items]
        return {"game_id": game_id, "items": items, "next_cursor": page.next_cursor}

    def shifts(self, game_id: str) -> list[dict]:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
        if game_id not in self._shifts:
            self.detect_all(game_id, persist=False)
        return self._shifts[game_id]["shifts"]

    def erase_player(self, game_id: str, player_id: str) -> dict:
        with self._uow() as session:
            repo.get_game_or_raise(session, game_id)
            n = sum(repo.erase_player(session, game_id, player_id).values())
        if not n:
            raise PlayerNotFound(f"player {player_id!r} is not stored in game {game_id!r}")
        return {"game_id": game_id, "player_id": player_id, "erased": True, "rows_deleted": n}

    # ------------------------------------------------------------------ background persistence
    # The writer takes everything queued, waits up to ``_write_linger_s`` for more while it holds fewer
    # than ``_write_batch_rows`` rows (``flush`` ends the wait), and writes the lot in one transaction:
    # at concurrency 1 the single detections of several requests share one ``INSERT`` and one commit.
    _write_linger_s = 0.02  # in-process, 400 single detections: writer CPU per detection 5 ms: ~0.6 ms, 20 ms: ~0.3 ms
    _write_batch_rows = 1_000
    _writer_start = threading.Lock()

    @property
    def _write_wake(self) -> threading.Event:
        """Set by ``flush``: the writer stops waiting for more."""
        wake = self.__dict__.get("_write_wake_event")
        if wake is None:
            with self._writer_start:
                wake = self.__dict__.setdefault("_write_wake_event", threading.Event())
        return wake

    def _enqueue(self, item) -> None:
        """Queue ``(kind, game_id, rows)`` for the background writer (started on first use)."""
        self._writes.put(item)
        writer = self._writer
        if writer is None or not writer.is_alive():
            with self._writer_start:
                if self._writer is None or not self._writer.is_alive():
                    self._writer = threading.Thread(target=self._write_loop, name="useg-writer", daemon=True)
                    self._writer.start()

    def _write_loop(self) -> None:
        """Write queued detections until ``close`` (it leaves once stopped and the queue is empty)."""
        q = self._writes
        while True:
            try:
                first = q.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            self._write_batch(self._gather(first))

    def _gather(self, first) -> list:
        """``first`` and what else is queued; while short, what arrives within the linger too.

        The writer sleeps out the linger once (``flush`` wakes it) instead of waking for every detection
        queued meanwhile: it takes the interpreter lock from the requests once per batch, not per item.
        """
        q = self._writes
        batch = [first]
        rows = 0 if first is _FLUSH else len(first[2])
        hurry = first is _FLUSH or self._stop.is_set()
        lingered = False
        while rows < self._write_batch_rows:
            try:
                item = q.get_nowait()
            except queue.Empty:
                if hurry or lingered:
                    break
                lingered = True
                self._write_wake.wait(self._write_linger_s)
                self._write_wake.clear()
                continue
            batch.append(item)
            if item is _FLUSH:
                hurry = True
            else:
                rows += len(item[2])
        return batch

    def _write_batch(self, batch) -> None:
        """Store a batch's detections in one transaction (each game's in the order queued).

        Should that fail, it is retried twice, then each queued item goes in its own transaction, so
        one bad item costs only its own rows; what still fails is logged (and counted), never raised.
        """
        items = [item for item in batch if item is not _FLUSH]
        try:
            if items:
                self._write_items(items)
        finally:
            for _ in batch:
                self._writes.task_done()

    def _write_items(self, items: list) -> None:
        by_game: dict[str, list] = {}
        for _kind, game_id, rows in items:
            by_game.setdefault(game_id, []).extend(rows)
        n = sum(len(rows) for rows in by_game.values())
        for attempt in range(3):
            try:
                with self._uow() as session:
                    for game_id, rows in by_game.items():
                        repo.insert_detections(session, game_id, rows)
                return
            except Exception:  # noqa: BLE001 - derived data, retried then logged
                log.exception("persisting %d detections failed (attempt %d)", n, attempt + 1)
                if attempt < 2:
                    time.sleep(0.2 * (attempt + 1))
        lost = 0
        if len(items) > 1:
            for _kind, game_id, rows in items:
                try:
                    with self._uow() as session:
                        repo.insert_detections(session, game_id, rows)
                except Exception:  # noqa: BLE001
                    log.exception("persisting %d detections of game %r failed; they are not stored",
                                  len(rows), game_id)
                    lost += len(rows)
        else:
            lost = n
            log.error("%d detections of game %r are not stored", n, items[0][1])
        if lost:
            self.counters["detections_not_persisted"] = self.counters.get("detections_not_persisted", 0) + lost

    def flush(self) -> None:
        """Wait until the detections answered so far are persisted (the writer's wait for more ends now).

        Should no writer be running (never started, or stopped by ``close``), what is queued is written
        by the calling thread.
        """
        q = self._writes
        writer = self._writer
        if writer is not None and writer.is_alive():
            q.put(_FLUSH)
            self._write_wake.set()
            with q.all_tasks_done:
                while q.unfinished_tasks and writer.is_alive():
                    q.all_tasks_done.wait(0.1)
            if writer.is_alive():
                return
        while True:  # the writer is gone (or was never started): left-overs are written here
            try:
                first = q.get_nowait()
            except queue.Empty:
                return
            batch = [first]
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            self._write_batch(batch)

    # ------------------------------------------------------------------ API keys and limits
    def create_api_key(self, scope: str, *, games: list[str] | None = None, name: str | None = None
                       ) -> tuple[str, dict]:
        if scope not in ("read", "write", "admin"):
            raise InvalidInput("scope must be read, write or admin", field="scope")
        prefix = secrets.token_hex(4)
        secret = secrets.token_urlsafe(24)
        plaintext = f"useg_{prefix}_{secret}"
        with self._uow() as session:
            repo.create_api_key(session, key_prefix=prefix, key_hash=_hash_key(plaintext), scope=scope,
                                games=games, name=name)
            info = _key_public(srepo.get_api_key_info(session, prefix))
        return plaintext, info

    def ensure_api_key(self, plaintext: str, scope: str = "admin") -> dict:
        """Store a given key (bootstrap admin key) if it is not stored yet."""
        parts = plaintext.split("_")
        prefix = parts[1] if len(parts) >= 3 and parts[0] == "useg" else hashlib.sha256(
            plaintext.encode()).hexdigest()[:8]
        with self._uow() as session:
            found = srepo.get_api_key_info(session, prefix)
            if found:
                return _key_public(found)
            key = repo.create_api_key(session, key_prefix=prefix, key_hash=_hash_key(plaintext), scope=scope,
                                      games=None, name="bootstrap")
            return _key_public(srepo.get_api_key_info(session, key.key_prefix))

    def authenticate(self, key: str) -> dict | None:
        parts = key.split("_")
        prefix = parts[1] if len(parts) >= 3 and parts[0] == "useg" else hashlib.sha256(key.encode()).hexdigest()[:8]
        with self.Session() as session:
            found = srepo.get_api_key_info(session, prefix)
        if not found or found.get("revoked_at") is not None:
            return None
        if not secrets.compare_digest(found["key_hash"], _hash_key(key)):
            return None
        return {"id": found["id"], "scope": found["scope"], "games": found.get("games")}

    def list_api_keys(self) -> list[dict]:
        with self.Session() as session:
            return [_key_public(srepo.get_api_key_info(session, k.key_prefix))
                    for k in repo.list_api_keys(session, include_revoked=True)]

    def revoke_api_key(self, key_prefix: str) -> None:
        with self._uow() as session:
            if not repo.revoke_api_key(session, key_prefix):
                raise InvalidInput(f"no API key with prefix {key_prefix!r}", field="key_prefix")

    # ------------------------------------------------------------------ metrics
    def _record_confidence(self, game_id: str, conf: np.ndarray) -> None:
        if len(conf):
            key = f"confidence_sum:{game_id}"
            self.counters[key] = self.counters.get(key, 0.0) + float(conf.sum())
            key_n = f"confidence_n:{game_id}"
            self.counters[key_n] = self.counters.get(key_n, 0) + len(conf)

    def metrics_snapshot(self) -> dict:
        games = {}
        for (game_id, _v), tax in list(self._tax.items()):
            n = self.counters.get(f"confidence_n:{game_id}", 0)
            games[game_id] = {
                "variance_explained": tax.variance_explained,
                "average_confidence": (self.counters.get(f"confidence_sum:{game_id}", 0.0) / n) if n else None,
                "taxonomy_version": tax.taxonomy_version,
                "calibration_confidence_mean": tax.calibration_stats.get("confidence_mean"),
                "primary_segment_stability": tax.calibration_stats.get("primary_segment_stability"),
            }
        return {"games": games, "counters": {k: v for k, v in self.counters.items() if ":" not in k},
                "adapter": self.router.counters()}


# ---------------------------------------------------------------------- helpers
def _hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _key_public(info: dict | None) -> dict:
    if info is None:
        return {}
    return {k: v for k, v in info.items() if k != "key_hash"}


def _columnar(tax, ps) -> dict:
    """The compact answer of many players as columns: ``player_id``, ``confidence``, one list of primary
    segment names per axis, and the top-7 as two (n, 7) lists of axis and segment names (null-padded).
    Built with array indexing, no object per player (a 10,000-player answer serializes in milliseconds)."""
    if ps is None:
        return {"player_id": [], "confidence": [], "primary_segments": {a.axis_id: [] for a in tax.axes},
                "top_segments": {"axis": [], "segment": []}}
    n = len(ps.player_ids)
    primary = {}
    for a in ps.axes:
        names = np.array([s.segment_name for s in a.axis.segments], dtype=object)
        primary[a.axis.axis_id] = names[a.scores.primary].tolist()
    for axis in tax.axes:
        if axis.degenerate:
            primary[axis.axis_id] = [axis.segments[0].segment_name] * n
    axis_names = np.array([a.axis.axis_id for a in ps.axes] + [None], dtype=object)
    width = max((len(a.axis.segments) for a in ps.axes), default=1)
    seg_names = np.full((len(ps.axes) + 1, width), None, dtype=object)
    for ai, a in enumerate(ps.axes):
        seg_names[ai, : len(a.axis.segments)] = [s.segment_name for s in a.axis.segments]
    ta = np.where(ps.top_axis >= 0, ps.top_axis, len(ps.axes))
    ts = np.where(ps.top_axis >= 0, ps.top_segment, 0)
    return {"player_id": list(ps.player_ids), "confidence": np.asarray(ps.confidence, dtype=np.float64),
            "primary_segments": primary,
            "top_segments": {"axis": axis_names[ta].tolist(), "segment": seg_names[ta, ts].tolist()}}


def _compact_profiles(tax, ps, as_of: str) -> list[dict]:
    """The compact answer of every player: ``player_id``, the primary segment per axis, the top-7 as
    ``[axis, segment]`` pairs, ``confidence``, ``taxonomy_version``, ``as_of``. Built from
    :func:`_columnar`'s columns (one name lookup per column, not per player and field)."""
    cols = _columnar(tax, ps)
    axis_ids = list(cols["primary_segments"])
    primary = zip(*cols["primary_segments"].values(), strict=True) if axis_ids else iter(lambda: (), None)
    top = zip(cols["top_segments"]["axis"], cols["top_segments"]["segment"], strict=True)
    version = tax.taxonomy_version
    return [
        {"player_id": pid, "primary_segments": dict(zip(axis_ids, prim, strict=True)),
         "top_segments": [[a, sg] for a, sg in zip(ta, ts, strict=True) if a is not None],
         "confidence": conf, "taxonomy_version": version, "as_of": as_of}
        for pid, prim, (ta, ts), conf in zip(cols["player_id"], primary, top, cols["confidence"].tolist(),
                                             strict=False)
    ]


def _json_objects(metrics: list[str], values: np.ndarray) -> pl.Series:
    """JSON text ``{metric: value}`` per row of ``values`` (n, len(metrics)), built columnar by Polars
    (shortest round-trip floats; NaN/inf as ``null``, as ``json_dumps`` writes them)."""
    cols = {f"c{j}": values[:, j] for j in range(len(metrics))}
    frame = pl.DataFrame(cols, schema=dict.fromkeys(cols, pl.Float64))
    fields = [pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(m) for c, m in zip(cols, metrics, strict=True)]
    return frame.select(pl.struct(fields).struct.json_encode()).to_series()


def membership_rows(tax: GameBehavioralTaxonomy, ps) -> pl.DataFrame:
    """Rows for ``player_segment_memberships``: each axis's primary and every segment with strength ≥ 0.01.

    Built column by column (no Python object per row); ``position_offset`` is JSON text.
    """
    parts = []
    n = len(ps.player_ids)
    pid = pl.Series("player_id", ps.player_ids, dtype=pl.String)
    now = datetime.now(UTC)
    for a in ps.axes:
        ks = a.scores
        k = ks.strength.shape[1]
        seg_ids = np.array([s.segment_id for s in a.axis.segments], dtype=np.int64)
        centers_metric = np.stack([s.center_metric for s in a.axis.segments])
        is_primary = np.zeros((n, k), dtype=bool)
        is_primary[np.arange(n), ks.primary] = True
        keep = is_primary | (ks.strength >= 0.01)
        rr, ss = np.nonzero(keep)
        offsets = ps.X[:, a.cols][rr] - centers_metric[ss]
        parts.append(pl.DataFrame({
            "player_id": pid.gather(rr), "segment_id": seg_ids[ss],
            "axis": pl.Series([a.axis.axis_id], dtype=pl.String).gather(np.zeros(len(rr), dtype=np.int64)),
            "is_primary": is_primary[rr, ss],
            "membership_strength": ks.strength[rr, ss], "membership_probability": ks.probability[rr, ss],
            "typicality": ks.typicality[rr, ss], "distance_from_center": np.sqrt(ks.dist_sq[rr, ss]),
            "position_offset": _json_objects(a.axis.metrics, offsets),
            "confidence": a.confidence[rr],
        }).with_columns(pl.lit(now).dt.cast_time_unit("us").alias("last_updated")))
    if not parts:
        return pl.DataFrame()
    return pl.concat(parts, how="vertical_relaxed")


def typical_offset_rows(tax: GameBehavioralTaxonomy, daily: pl.DataFrame, first: pl.DataFrame,
                        as_of_dt: datetime) -> pl.DataFrame:
    """Rows for ``player_typical_offsets``: x_typ − μ_s* per axis, model space and metric units (JSON text)."""
    s = GameSettings.from_dict(tax.settings)
    frames = compute_windows(daily, as_of_dt, s, custom_types=tax.custom_types, first=first,
                             which=("typical",))
    typ = frames["typical"]
    segs = typical_segments(tax, typ)
    X = matrix(typ, tax.scaler.metrics)
    pid = typ["player_id"].cast(pl.String)
    e = typ["exposure_days"].cast(pl.Float64)
    now = datetime.now(UTC)
    parts = []
    for axis in tax.active_axes:
        seg, Zt, cols = segs[axis.axis_id]
        kern = axis.kernel
        off_model = Zt - kern.centers_[seg]
        centers_metric = np.stack([sg.center_metric for sg in axis.segments])[seg]
        off_metric = X[:, cols] - centers_metric
        seg_ids = np.array([sg.segment_id for sg in axis.segments], dtype=np.int64)[seg]
        parts.append(pl.DataFrame({
            "player_id": pid, "axis": pl.Series([axis.axis_id], dtype=pl.String).gather(np.zeros(len(pid), np.int64)),
            "segment_id": seg_ids,
            "offset": _json_objects(axis.metrics, off_metric),
            "offset_model": _json_objects(axis.metrics, off_model),
            "typical_exposure_days": e,
        }).with_columns(pl.lit(now).dt.cast_time_unit("us").alias("updated_at")))
    return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()


__all__ = ["Services", "membership_rows", "typical_offset_rows", "align", "GameNotFound"]
