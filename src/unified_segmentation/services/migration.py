"""The integration adapter wired to the database: rollout configuration and audit, the profile entry
point (legacy / unified / shadow / fallback), shadow records and the migration validator."""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np
import polars as pl

from ..adapter import (
    BuiltinLegacy,
    CompatProfile,
    LegacyPool,
    ProfileRouter,
    RolloutConfig,
    ShadowRecord,
    shadow_report,
    unified_to_compat,
    validate,
)
from ..core.legacy import LEGACY_METRICS, LegacyBaselineModel
from ..errors import InvalidInput, NoTaxonomy, NotFound, PlayerNotFound
from ..game_settings import GameSettings
from ..pipeline.data import align, compute_windows, resolve_as_of
from ..storage import repositories as repo

log = logging.getLogger("unified_segmentation.migration")


class MigrationMixin:
    """Adapter use cases; mixed into ``Services`` (needs ``Session``, ``_uow``, ``categorize``...)."""

    def _init_migration(self) -> None:
        self.router = ProfileRouter()
        self.legacy_pool = LegacyPool(lambda game_id, cfg: BuiltinLegacy(self.legacy_metrics, self.legacy_model))

    # ------------------------------------------------------------------ built-in legacy inputs
    def legacy_model(self, game_id: str) -> LegacyBaselineModel:
        tax = self.taxonomy_object(game_id)
        if "legacy" not in tax.anomaly:
            raise NoTaxonomy(f"game {game_id!r} has no legacy baseline model; recalibrate")
        return LegacyBaselineModel.from_dict(tax.anomaly["legacy"])

    def _window_metrics(self, game_id: str, player_ids: list[str], as_of=None
                        ) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
        with self.Session() as session:
            s = GameSettings.from_dict(repo.get_game_or_raise(session, game_id).settings or {})
            as_of_dt = resolve_as_of(as_of, s)
            daily, first = self._player_data(session, game_id, s, as_of_dt, player_ids,
                                             s.current_days + s.typical_days + 1)
        tax = self.taxonomy_object(game_id)
        frames = compute_windows(daily, as_of_dt, s, custom_types=tax.custom_types, first=first,
                                 which=("current", "typical"))
        cur = frames["current"]
        return cur, align(frames["typical"], cur["player_id"]), as_of_dt

    def legacy_metrics(self, game_id: str, player_id: str) -> tuple[dict[str, float], dict[str, float]]:
        cur, typ, _ = self._window_metrics(game_id, [player_id])
        if cur.height == 0:
            raise PlayerNotFound(f"player {player_id!r} has no stored activity in game {game_id!r}")
        cols = [m for m in LEGACY_METRICS if m in cur.columns]
        current = {m: float(cur[m][0] or 0.0) for m in cols}
        typical = {m: float(typ[m][0] or 0.0) for m in cols} if (typ["exposure_days"][0] or 0) > 0 else {}
        return current, typical

    # ------------------------------------------------------------------ rollout configuration
    def get_rollout(self, game_id: str) -> dict:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            row = repo.get_rollout_config(session, game_id)
            snap = repo.rollout_snapshot(row)
            audit = [{"at": a.at.isoformat(), "actor": a.actor, "action": a.action, "before": a.before,
                      "after": a.after} for a in repo.list_rollout_audit(session, game_id, limit=20)]
        cfg = RolloutConfig.parse(snap) if snap else RolloutConfig()
        return {"game_id": game_id, **cfg.to_dict(), "configured": snap is not None, "audit": audit}

    def put_rollout(self, game_id: str, body: dict, *, actor: str | None = None, action: str = "update") -> dict:
        with self.Session() as session:
            row = repo.get_rollout_config(session, game_id)
            current = repo.rollout_snapshot(row) or {}
        merged = {**{k: v for k, v in current.items() if v is not None}, **(body or {})}
        if "strategy" in (body or {}) and "percentage" not in (body or {}):
            merged.pop("percentage", None)
        cfg = RolloutConfig.parse(merged)
        with self._uow() as session:
            repo.get_game_or_raise(session, game_id)
            repo.save_rollout_config(session, game_id, actor=actor, action=action, **cfg.to_dict())
        return self.get_rollout(game_id)

    def rollback_rollout(self, game_id: str, *, actor: str | None = None) -> dict:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            audit = repo.list_rollout_audit(session, game_id, limit=1)
        if not audit or audit[0].before is None:
            raise NotFound(f"game {game_id!r} has no earlier rollout configuration to roll back to")
        before = {k: v for k, v in audit[0].before.items() if k in ("strategy", "percentage", "shadow_sample",
                                                                    "salt", "legacy")}
        with self._uow() as session:
            repo.save_rollout_config(session, game_id, actor=actor, action="rollback",
                                     **RolloutConfig.parse(before).to_dict())
        return self.get_rollout(game_id)

    # ------------------------------------------------------------------ the adapter's entry point
    def unified_compat(self, game_id: str, player_id: str) -> CompatProfile:
        prof = self.categorize(game_id, player_id)
        det = self.detect(game_id, player_id)
        _, typical = self.legacy_metrics(game_id, player_id)
        return unified_to_compat(prof, det, typical)

    def profile(self, game_id: str, player_id: str, *, force_unified: bool = False, force_legacy: bool = False
                ) -> dict:
        cfg = self.get_rollout(game_id)
        config = RolloutConfig.parse({k: cfg[k] for k in ("strategy", "percentage", "shadow_sample", "salt",
                                                           "legacy")})
        legacy = self.legacy_pool.get(game_id, config.legacy)
        out = self.router.serve(config, game_id, player_id, unified=lambda: self.unified_compat(game_id, player_id),
                                legacy=legacy, force_unified=force_unified, force_legacy=force_legacy,
                                on_shadow=self._store_shadow)
        return out.model_dump(mode="json")

    def _store_shadow(self, rec: ShadowRecord) -> None:
        d = rec.to_dict()
        try:
            with self._uow() as session:
                repo.add_shadow_comparison(session, rec.game_id, rec.player_id, legacy=d.get("legacy"),
                                           unified=d.get("unified"), similarity=d.get("similarity"),
                                           legacy_ms=d.get("legacy_ms"), unified_ms=d.get("unified_ms"),
                                           error=d.get("error"))
        except Exception:  # noqa: BLE001 - a shadow record must never break serving
            log.exception("storing a shadow comparison failed")

    def rollout_report(self, game_id: str) -> dict:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            rows = repo.list_shadow_comparisons(session, game_id)
            records = [{"player_id": r.player_id, "at": r.at.isoformat(), "legacy": r.legacy, "unified": r.unified,
                        "similarity": r.similarity, "legacy_ms": r.legacy_ms, "unified_ms": r.unified_ms,
                        "error": r.error} for r in rows]
        report = shadow_report(records)
        report["game_id"] = game_id
        report["router"] = self.router.counters()
        return report

    # ------------------------------------------------------------------ migration validator
    def validate(self, game_id: str, *, sample: int = 500, seed: int = 0) -> dict:
        if not 1 <= int(sample) <= 10_000:
            raise InvalidInput("sample must be between 1 and 10000", field="sample")
        with self.Session() as session:
            first = repo.players_first_seen(session, game_id)
        ids = np.array(sorted(first["player_id"].to_list()))
        if len(ids) == 0:
            raise PlayerNotFound(f"game {game_id!r} has no players")
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(ids, size=min(int(sample), len(ids)), replace=False).tolist())
        cur, typ, as_of_dt = self._window_metrics(game_id, chosen)
        model = self.legacy_model(game_id)
        cols = [m for m in LEGACY_METRICS if m in cur.columns]
        cats = self.categorize_batch(game_id, chosen, as_of=as_of_dt)
        dets = self.detect_batch(game_id, chosen, as_of=as_of_dt)
        cat_by = {p["player_id"]: p for p in cats["profiles"]}
        det_by = {d["player_id"]: d for d in dets["detections"]}
        pairs, scores = [], []
        cur_rows = {r["player_id"]: r for r in cur.iter_rows(named=True)}
        typ_rows = {r["player_id"]: r for r in typ.iter_rows(named=True)}
        for pid in chosen:
            if pid not in cat_by or pid not in det_by or pid not in cur_rows:
                continue
            # a metric no row of the window knows (night play in a quiet window) is absent: read as 0
            c = {m: float(cur_rows[pid].get(m) or 0.0) for m in cols}
            typ_row = typ_rows.get(pid) or {}
            t = {m: float(typ_row.get(m) or 0.0) for m in cols} if (typ_row.get("exposure_days") or 0) > 0 else {}
            fixed = BuiltinLegacy(lambda g, p, c=c, t=t: (c, t), model, clock=lambda: as_of_dt)
            legacy_prof = fixed.profile(game_id, pid)
            unified_prof = unified_to_compat(cat_by[pid], det_by[pid], t, timestamp=as_of_dt)
            pairs.append((legacy_prof, unified_prof))
            lscore = float(model.score({m: np.array([c.get(m, 0.0)]) for m in model.metrics},
                                       {m: np.array([t.get(m, 0.0)]) for m in model.metrics})[0]) if t else 0.0
            scores.append((lscore, float(det_by[pid]["overall_score"])))
        report = validate(pairs, anomaly_scores=scores)
        report["game_id"] = game_id
        report["as_of"] = as_of_dt.isoformat()
        with self._uow() as session:
            row = repo.save_validation_report(session, game_id, sample_size=len(pairs), report=report)
            report_id = row.id
        return {"id": report_id, **report}

    def get_validation(self, game_id: str, report_id: int) -> dict:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            row = repo.get_validation_report(session, game_id, report_id)
            if row is None:
                raise NotFound(f"game {game_id!r} has no validation report {report_id}")
            return {"id": row.id, "created_at": row.created_at.isoformat(), **(row.report or {})}

    def list_validations(self, game_id: str) -> list[dict]:
        with self.Session() as session:
            repo.get_game_or_raise(session, game_id)
            return [{"id": r.id, "created_at": r.created_at.isoformat(), "sample_size": r.sample_size,
                     "equivalence_rate": (r.report or {}).get("equivalence_rate")}
                    for r in repo.list_validation_reports(session, game_id)]


__all__ = ["MigrationMixin"]
