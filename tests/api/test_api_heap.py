"""The server keeps the cyclic garbage collector off its long-lived heap (api/heap.py)."""

from __future__ import annotations

import gc
import weakref

from unified_segmentation.api import app as app_module
from unified_segmentation.api.heap import freeze_heap

GAME, PLAYER = "test_game", "test_player"  # the seeded game (conftest.py)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freeze_heap_exempts_live_objects_and_reclaims_earlier_cyclic_garbage() -> None:
    try:
        kept = [[1], [2]]
        freeze_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # frozen: outside every generation

        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle: only the collector can free it
        dead = weakref.ref(a)
        freeze_heap()  # the cycle is alive here, so it is frozen
        del a, b
        gc.collect()
        assert dead() is not None  # a frozen cycle is not collected...
        freeze_heap()
        assert dead() is None  # ...until the next freeze puts it back first
    finally:
        gc.unfreeze()


def test_server_freezes_at_start_and_after_each_taxonomy_it_compiles(make_client, settings_for, seeded_sqlite,
                                                                     monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(app_module, "freeze_heap", lambda: calls.append(1))
    services = seeded_sqlite.services
    client = make_client(settings_for(seeded_sqlite.url, gc_freeze=True), services=services)
    assert calls == [1]  # at start
    services._tax.clear()  # the next call compiles the taxonomy again
    r = client.post("/api/v1/segmentation/categorize", json={"game_id": GAME, "player_id": PLAYER})
    assert r.status_code == 200, r.text
    assert calls == [1, 1]
    r = client.post("/api/v1/segmentation/categorize", json={"game_id": GAME, "player_id": PLAYER})
    assert calls == [1, 1]  # cached: nothing compiled
    client.__exit__(None, None, None)
    assert services.after_compile is None  # the shared services get their hook back at shutdown


def test_no_freeze_when_turned_off(make_client, settings_for, seeded_sqlite, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(app_module, "freeze_heap", lambda: calls.append(1))
    services = seeded_sqlite.services
    make_client(settings_for(seeded_sqlite.url, gc_freeze=False), services=services)
    services._tax.clear()
    assert services.after_compile is None
    assert calls == []
