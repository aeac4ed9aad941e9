"""Games and settings, rollout (audited), shadow comparisons, validation reports, API keys,
idempotency keys, calibration jobs, and erasing a player."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest
from sqlalchemy.orm import Session

from unified_segmentation.errors import GameNotFound
from unified_segmentation.storage import repositories as repo

from .conftest import T0, make_events


def test_games_and_settings(db_session: Session) -> None:
    assert repo.get_game(db_session, "new") is None
    with pytest.raises(GameNotFound):
        repo.get_game_or_raise(db_session, "new")
    game = repo.ensure_game(db_session, "new", {"timezone": "UTC", "profile_days": 28})
    assert game.settings == {"timezone": "UTC", "profile_days": 28}
    assert repo.ensure_game(db_session, "new", {"timezone": "Asia/Tokyo"}).settings["timezone"] == "UTC"
    merged = repo.update_settings(db_session, "new", {"timezone": "Europe/London", "default_as_of": None})
    assert merged == {"timezone": "Europe/London", "profile_days": 28, "default_as_of": None}
    assert repo.get_game_or_raise(db_session, "new").settings_updated_at is not None
    assert repo.update_settings(db_session, "new", {"min_k": 3}, replace=True) == {"min_k": 3}
    with pytest.raises(GameNotFound):
        repo.update_settings(db_session, "missing", {})

    repo.touch_data_changed(db_session, "new", newest_event_at=T0)
    repo.touch_data_changed(db_session, "new", newest_event_at=T0 - dt.timedelta(days=1))
    game = repo.get_game_or_raise(db_session, "new")
    assert game.newest_event_at == T0 and game.data_changed_at is not None
    assert [g.game_id for g in repo.list_games(db_session)] == ["new"]


def test_rollout_config_is_audited(db_session: Session, game: str) -> None:
    assert repo.get_rollout_config(db_session, game) is None
    defaults = {"strategy": "parallel_only", "percentage": 50.0, "shadow_sample": 0.1, "salt": "s1"}
    repo.save_rollout_config(db_session, game, actor="ops", defaults=defaults)
    repo.save_rollout_config(db_session, game, actor="ops", strategy="gradual_rollout", percentage=10.0)
    repo.save_rollout_config(db_session, game, actor="ops", action="rollback", strategy="parallel_only")
    config = repo.get_rollout_config(db_session, game)
    assert config is not None and config.strategy == "parallel_only" and config.percentage == 10.0
    audit = repo.list_rollout_audit(db_session, game)
    assert [a.action for a in audit] == ["rollback", "update", "update"]
    assert audit[2].before is None and audit[2].after["strategy"] == "parallel_only"
    assert audit[1].before["strategy"] == "parallel_only" and audit[1].after["strategy"] == "gradual_rollout"
    with pytest.raises(ValueError):
        repo.save_rollout_config(db_session, game, actor="ops", colour="blue")


def test_shadow_and_validation_reports(db_session: Session, game: str) -> None:
    repo.add_shadow_comparison(
        db_session,
        game,
        "p1",
        legacy={"primary_segments": {"monetization": "whale"}},
        unified=None,
        similarity=0.93,
        legacy_ms=3.0,
        unified_ms=1.5,
        at=T0,
    )
    repo.add_shadow_comparison(db_session, game, "p2", legacy=None, unified=None, error="timeout", at=T0)
    rows = repo.list_shadow_comparisons(db_session, game)
    assert [(r.player_id, r.error) for r in rows] == [("p1", None), ("p2", "timeout")]
    assert rows[0].legacy == {"primary_segments": {"monetization": "whale"}}
    assert repo.list_shadow_comparisons(db_session, game, since=T0 + dt.timedelta(seconds=1)) == []

    report = repo.save_validation_report(
        db_session, game, sample_size=500, report={"kappa": 0.81, "nan": float("nan")}
    )
    again = repo.get_validation_report(db_session, game, report.id)
    assert again is not None and again.report == {"kappa": 0.81, "nan": None}
    assert repo.get_validation_report(db_session, "other", report.id) is None
    assert [r.id for r in repo.list_validation_reports(db_session, game)] == [report.id]


def test_api_keys(db_session: Session) -> None:
    assert not repo.has_api_keys(db_session)
    key = repo.create_api_key(db_session, key_prefix="us_abc", key_hash="h1", scope="admin", name="bootstrap")
    repo.create_api_key(db_session, key_prefix="us_def", key_hash="h2", scope="read", games=["g1"])
    assert repo.has_api_keys(db_session, scope="admin")
    assert repo.get_api_key(db_session, "us_def").games == ["g1"]
    assert repo.revoke_api_key(db_session, "us_abc")
    assert not repo.revoke_api_key(db_session, "us_abc")
    assert key.revoked_at is not None
    assert not repo.has_api_keys(db_session, scope="admin")
    assert [k.key_prefix for k in repo.list_api_keys(db_session)] == ["us_def"]
    assert len(repo.list_api_keys(db_session, include_revoked=True)) == 2
    with pytest.raises(ValueError):
        repo.create_api_key(db_session, key_prefix="x", key_hash="y", scope="root")


def test_idempotency_keys(db_session: Session, game: str) -> None:
    assert repo.get_idempotency(db_session, game, "k1") is None
    assert repo.put_idempotency(db_session, game, "k1", {"status": 200, "body": {"inserted": 3}})
    assert not repo.put_idempotency(db_session, game, "k1", {"status": 200, "body": {"inserted": 0}})
    assert repo.get_idempotency(db_session, game, "k1").response["body"] == {"inserted": 3}
    assert repo.put_idempotency(db_session, "other", "k1", None)
    assert (
        repo.purge_idempotency(db_session, older_than=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)) == 2
    )


def test_calibration_jobs(db_session: Session, game: str) -> None:
    job = repo.create_calibration_job(db_session, game)
    assert job.status == "pending" and job.finished_at is None
    repo.update_calibration_job(db_session, job.job_id, status="running")
    done = repo.update_calibration_job(
        db_session, job.job_id, status="succeeded", result={"taxonomy_version": 1}
    )
    assert done.finished_at is not None and repo.get_calibration_job(db_session, job.job_id).result == {
        "taxonomy_version": 1
    }
    assert [j.job_id for j in repo.list_calibration_jobs(db_session, game)] == [job.job_id]
    with pytest.raises(KeyError):
        repo.update_calibration_job(db_session, "nope", status="failed")


def test_erase_player(db_session: Session, game: str) -> None:
    events = make_events([("e1", "p1", "session", T0, 60.0), ("e2", "p2", "session", T0, 60.0)])
    repo.insert_events(db_session, game, events)
    daily = pl.DataFrame({"player_id": ["p1", "p2"], "date": [T0.date()] * 2, "sessions": [1.0, 1.0]})
    repo.upsert_daily(db_session, game, daily)
    repo.upsert_outcomes(db_session, game, pl.DataFrame({"player_id": ["p1", "p2"], "ltv": [1.0, 2.0]}))
    memberships = pl.DataFrame(
        {
            "player_id": ["p1", "p2"],
            "axis": ["monetization"] * 2,
            "segment_id": [1, 1],
            "membership_strength": [0.5] * 2,
            "position_offset": [json.dumps({"spend_per_day": 0.0})] * 2,
        }
    )
    repo.bulk_write_memberships(db_session, game, 1, memberships)
    repo.bulk_write_offsets(db_session, game, 1, memberships.select("player_id", "axis", "segment_id"))
    repo.insert_detections(
        db_session,
        game,
        [
            {
                "player_id": p,
                "taxonomy_version": 1,
                "as_of": T0,
                "is_anomalous": False,
                "overall_score": 0.0,
                "surprise": 0.0,
            }
            for p in ("p1", "p2")
        ],
    )
    repo.add_shadow_comparison(db_session, game, "p1", legacy=None, unified=None)

    deleted = repo.erase_player(db_session, game, "p1")
    assert deleted == {
        "raw_events": 1,
        "daily_activity": 1,
        "players": 1,
        "outcomes": 1,
        "player_segment_memberships": 1,
        "player_typical_offsets": 1,
        "anomaly_detections": 1,
        "shadow_comparisons": 1,
    }
    assert not repo.player_exists(db_session, game, "p1")
    assert repo.player_exists(db_session, game, "p2")
    assert repo.load_events(db_session, game)["player_id"].to_list() == ["p2"]
    assert repo.load_memberships(db_session, game, 1)["player_id"].to_list() == ["p2"]
    assert repo.erase_player(db_session, game, "p1") == dict.fromkeys(deleted, 0)
