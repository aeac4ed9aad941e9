"""Anomaly detections: bulk insert, listing order, filters, cursor pagination."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from sqlalchemy.orm import Session

from unified_segmentation.errors import InvalidInput
from unified_segmentation.storage import repositories as repo
from unified_segmentation.storage.repositories import anomalies as anomalies_repo

from .conftest import T0


def _detections() -> list[dict]:
    rows = []
    for i in range(10):
        money_flag = i % 2 == 0
        rows.append(
            {
                "player_id": f"p{i}",
                "taxonomy_version": 1,
                "as_of": T0,
                "detected_at": T0 + dt.timedelta(minutes=i),
                "is_anomalous": i < 8,
                "overall_score": min(1.0, 0.5 + i * 0.1),
                "surprise": float(i % 5),  # ties on purpose
                "confidence": 0.9,
                "context": "weekday",
                "axes": {
                    "monetization": {
                        "anomaly_score": 0.9 if money_flag else 0.1,
                        "direction": "spend_spike" if i % 4 == 0 else "spend_drop",
                        "is_anomalous": money_flag,
                    },
                    "engagement": {
                        "anomaly_score": 0.8,
                        "direction": "engagement_drop",
                        "is_anomalous": i % 3 == 0,
                    },
                },
            }
        )
    return rows


def _ids(page: repo.AnomalyPage) -> list[str]:
    return [d.player_id for d in page.items]


def test_listing_order_and_pagination(db_session: Session, game: str) -> None:
    assert repo.insert_detections(db_session, game, _detections()) == 10
    everything = repo.list_anomalies(db_session, game, anomalous_only=False, limit=100)
    assert [d.surprise for d in everything.items] == sorted((float(i % 5) for i in range(10)), reverse=True)
    assert everything.next_cursor is None
    # ties on surprise: the later-inserted (higher id) first
    assert _ids(everything)[:2] == ["p9", "p4"]

    pages, cursor = [], None
    while True:
        page = repo.list_anomalies(db_session, game, anomalous_only=False, limit=3, cursor=cursor)
        pages.append(_ids(page))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert sum(pages, []) == _ids(everything)


def test_listing_filters(db_session: Session, game: str) -> None:
    repo.insert_detections(db_session, game, _detections())
    anomalous = repo.list_anomalies(db_session, game)
    assert sorted(_ids(anomalous)) == [f"p{i}" for i in range(8)]
    money = repo.list_anomalies(db_session, game, axis="monetization")
    assert sorted(_ids(money)) == ["p0", "p2", "p4", "p6"]
    spikes = repo.list_anomalies(db_session, game, direction="spend_spike")
    assert sorted(_ids(spikes)) == ["p0", "p4"]
    drops = repo.list_anomalies(db_session, game, direction="engagement_drop", anomalous_only=False)
    assert sorted(_ids(drops)) == ["p0", "p3", "p6", "p9"]
    strong = repo.list_anomalies(db_session, game, min_score=0.95)
    assert sorted(_ids(strong)) == ["p5", "p6", "p7"]
    recent = repo.list_anomalies(db_session, game, since=T0 + dt.timedelta(minutes=6))
    assert sorted(_ids(recent)) == ["p6", "p7"]
    assert repo.list_anomalies(db_session, game, axis="mone%").items == []
    assert repo.list_anomalies(db_session, "other_game").items == []


def test_detection_fields_roundtrip(db_session: Session, game: str) -> None:
    repo.insert_detections(db_session, game, _detections()[:1])
    (det,) = repo.list_player_detections(db_session, game, "p0")
    assert det.as_of == T0
    assert det.axes["monetization"]["direction"] == "spend_spike"
    assert det.flagged_axes == "|engagement|monetization|"
    assert det.directions == "|engagement_drop|spend_spike|"


def test_insert_frame_with_text_axes(db_session: Session, game: str) -> None:
    frame = pl.DataFrame(
        {
            "player_id": ["x", "y"],
            "taxonomy_version": [2, 2],
            "as_of": [dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 1)],
            "is_anomalous": [True, False],
            "overall_score": [0.9, 0.1],
            "surprise": [float("inf"), 0.0],
            "axes": ['{"social": {"anomaly_score": 0.95, "direction": "social_burst"}}', None],
        }
    )
    assert repo.insert_detections(db_session, game, frame) == 2
    page = repo.list_anomalies(db_session, game, direction="social_burst", limit=1)
    assert _ids(page) == ["x"] and page.items[0].surprise == float("inf")
    assert page.next_cursor is None
    first = repo.list_anomalies(db_session, game, anomalous_only=False, limit=1)
    second = repo.list_anomalies(db_session, game, anomalous_only=False, limit=1, cursor=first.next_cursor)
    assert (_ids(first), _ids(second)) == (["x"], ["y"])


def test_malformed_cursor(db_session: Session, game: str) -> None:
    with pytest.raises(InvalidInput):
        repo.list_anomalies(db_session, game, cursor="not-a-cursor")
    assert repo.decode_cursor(repo.encode_cursor(1.5, 7)) == (1.5, 7)


def _stored_rows(session: Session, game: str) -> list[tuple]:
    page = repo.list_anomalies(session, game, anomalous_only=False, limit=1000)
    return sorted(
        (d.player_id, d.taxonomy_version, d.as_of, d.detected_at, d.is_anomalous, d.overall_score, d.surprise,
         d.confidence, d.context, d.axes, d.flagged_axes, d.directions)
        for d in page.items
    )


def test_plain_rows_store_what_the_frame_path_stores(db_session: Session, game: str) -> None:
    """Small batches of dicts skip the frame (one INSERT / executemany); the stored rows are the same."""
    rows = _detections()
    rows[1] = rows[1] | {"axes": None, "confidence": None}
    rows[2] = {k: v for k, v in rows[2].items() if k != "context"}
    rows[3] = rows[3] | {"axes": '{"social": {"anomaly_score": 0.95, "direction": "social_burst"}}'}
    repo.ensure_game(db_session, "plain", {"timezone": "UTC"})
    assert repo.insert_detections(db_session, "plain", rows) == 10
    with pytest.MonkeyPatch.context() as mp:  # the frame path, for the same dicts
        mp.setattr(anomalies_repo, "SMALL_INSERT_ROWS", -1)
        assert repo.insert_detections(db_session, game, rows) == 10
    assert _stored_rows(db_session, "plain") == _stored_rows(db_session, game)
    naive = rows[0] | {"player_id": "naive", "as_of": dt.datetime(2024, 3, 1, 12)}  # naive = UTC
    del naive["detected_at"]  # default: now
    repo.insert_detections(db_session, "plain", [naive])
    (det,) = repo.list_player_detections(db_session, "plain", "naive")
    assert det.as_of == T0 and abs(det.detected_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    # ids ascend in the order given
    ids = [d.player_id for d in sorted(repo.list_anomalies(db_session, "plain", anomalous_only=False, limit=100).items,
                                       key=lambda d: d.id)]
    assert ids == [f"p{i}" for i in range(10)] + ["naive"]


def test_plain_rows_refuse_what_the_frame_path_refuses(db_session: Session, game: str) -> None:
    with pytest.raises(ValueError, match="surprise"):
        repo.insert_detections(db_session, game, [{k: v for k, v in _detections()[0].items() if k != "surprise"}])
    # NaN is null: NOT NULL (the driver's error, as on the frame path)
    with pytest.raises(Exception, match="(?i)null") as exc, db_session.begin_nested():  # noqa: PT011
            repo.insert_detections(db_session, game, [_detections()[0] | {"surprise": float("nan")}])
    assert "IntegrityError" in type(exc.value).__name__ or "NotNull" in type(exc.value).__name__
