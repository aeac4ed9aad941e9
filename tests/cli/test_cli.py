"""The ``useg`` command line, in process, through ``cli.app.main`` (so its error handling and exit codes
are exercised too), over one SQLite database seeded once for the module."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import typer

from unified_segmentation.api import server
from unified_segmentation.cli import app as cli_app
from unified_segmentation.cli import output as cli_output
from unified_segmentation.cli.app import main
from unified_segmentation.config import Settings
from unified_segmentation.services.facade import Services
from unified_segmentation.storage import migrate
from unified_segmentation.storage import repositories as repo
from unified_segmentation.synth import PlantedSpec, generate_game

GAME = "cli_game"
AS_OF = "2026-03-02T12:00:00+00:00"
UNIVERSAL = ("monetization", "engagement", "temporal", "social")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


def _invoke(*args: object) -> Run:
    """``useg ARGS`` in process: exit code (0 when ``main`` returns), stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


@dataclass
class Seeded:
    url: str
    dir: Path
    events_csv: Path
    events: pl.DataFrame
    players: set[str]
    upgrade: Run
    ingest: Run
    outcomes: Run
    calibrate: Run

    def useg(self, *args: object) -> Run:
        return _invoke(*args, "--database-url", self.url)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory):
    """A migrated SQLite database with one planted game ingested from CSV and calibrated (v1), all through the
    CLI; the working directory is the database's folder (reject files land there)."""
    folder = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{folder / 'useg.db'}"
    game = generate_game(PlantedSpec(n_players=400, seed=11, as_of=datetime.fromisoformat(AS_OF)))
    events_csv = folder / "events.csv"
    game.events.write_csv(events_csv)
    outcomes_csv = folder / "outcomes.csv"
    game.outcomes.write_csv(outcomes_csv)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv("USEG_DATABASE_URL", raising=False)
        mp.delenv("DATABASE_URL", raising=False)
        # wide consoles: nothing of interest is wrapped or cut in the captured tables and JSON
        mp.setattr(cli_output.console, "_width", 400)
        mp.setattr(cli_output.err_console, "_width", 400)
        s = Seeded(url=url, dir=folder, events_csv=events_csv, events=game.events,
                   players=set(game.truth["player_id"].to_list()), upgrade=_invoke("db", "upgrade", "--database-url",
                                                                                    url),
                   ingest=Run(0, "", ""), outcomes=Run(0, "", ""), calibrate=Run(0, "", ""))
        s.ingest = s.useg("ingest", "events", events_csv, "--game", GAME)
        s.outcomes = s.useg("ingest", "outcomes", outcomes_csv, "--game", GAME)
        s.calibrate = s.useg("calibrate", GAME, "--as-of", AS_OF)
        yield s


@contextmanager
def _services(url: str) -> Iterator[Services]:
    svc = Services(url)
    try:
        yield svc
    finally:
        svc.close()


def _count_events(url: str, game_id: str) -> int:
    with _services(url) as svc, svc.Session() as s:
        return repo.count_events(s, game_id)


# ---------------------------------------------------------------------------- db
def test_db_upgrade_then_current_names_the_head(seeded, monkeypatch):
    assert seeded.upgrade.code == 0, seeded.upgrade.err
    assert "database at head" in seeded.upgrade.out and "useg.db" in seeded.upgrade.out
    head = migrate.head_revision()
    monkeypatch.setenv("USEG_DATABASE_URL", seeded.url)  # the URL from the environment this time
    res = _invoke("db", "current")
    assert res.code == 0, res.err
    assert f"current: {head}" in res.out and f"head: {head}" in res.out


# ---------------------------------------------------------------------------- ingest
def test_ingest_events_then_again_reports_duplicates(seeded):
    assert seeded.ingest.code == 0, seeded.ingest.err
    first = seeded.ingest.json()
    n = seeded.events.height
    assert first == {"game_id": GAME, "accepted": n, "inserted": n, "duplicates": 0, "rejected": 0}
    again_csv = seeded.dir / "again.csv"
    seeded.events.head(500).write_csv(again_csv)
    again = seeded.useg("ingest", "events", again_csv, "-g", GAME)
    assert again.code == 0, again.err
    assert again.json() == {"game_id": GAME, "accepted": 500, "inserted": 0, "duplicates": 500, "rejected": 0}
    assert _count_events(seeded.url, GAME) == n


def test_ingest_events_in_a_given_timezone(seeded):
    local = seeded.events.head(30).with_columns(
        pl.col("timestamp").dt.convert_time_zone("Asia/Tokyo").dt.replace_time_zone(None))  # naive Tokyo times
    path = seeded.dir / "tokyo.csv"
    local.write_csv(path)
    res = seeded.useg("ingest", "events", path, "--game", "tz_game", "--timezone", "Asia/Tokyo")
    assert res.code == 0, res.err
    assert res.json()["inserted"] == 30
    with _services(seeded.url) as svc, svc.Session() as s:
        stored = repo.load_events(s, "tz_game")
    assert sorted(stored["timestamp"].to_list()) == sorted(seeded.events.head(30)["timestamp"].to_list())


def test_ingest_events_with_map(seeded):
    theirs = seeded.events.head(40).rename({"event_id": "id", "player_id": "uid", "event_type": "kind",
                                            "timestamp": "ts", "value": "amount"})
    path = seeded.dir / "theirs.csv"
    theirs.write_csv(path)
    res = seeded.useg("ingest", "events", path, "--game", "mapped_game", "--map", "event_id=id",
                      "--map", "uid=player_id", "--map", "event_type=kind", "--map", "timestamp=ts",
                      "--map", "value=amount")
    assert res.code == 0, res.err
    assert res.json()["inserted"] == 40
    assert _count_events(seeded.url, "mapped_game") == 40


def _rows_with_a_bad_value(seeded, name: str) -> Path:
    rows = seeded.events.head(5).with_columns(pl.col("value").cast(pl.Utf8))
    rows = rows.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("lots")).otherwise(pl.col("value"))
                             .alias("value"))
    path = seeded.dir / name
    rows.write_csv(path)
    return path


def test_ingest_skip_invalid_writes_a_reject_file(seeded):
    path = _rows_with_a_bad_value(seeded, "some_bad.csv")
    res = seeded.useg("ingest", "events", path, "--game", "skip_game", "--skip-invalid")
    assert res.code == 0, res.err
    summary = res.json()
    assert summary["inserted"] == 4 and summary["rejected"] == 1
    rejects = Path(summary["reject_file"])
    assert rejects == seeded.dir / "some_bad.csv.rejects.csv"
    frame = pl.read_csv(rejects)
    assert frame.height == 1 and frame["field"].to_list() == ["value"]
    assert _count_events(seeded.url, "skip_game") == 4


def test_ingest_a_bad_row_exits_nonzero_naming_it_and_writes_nothing(seeded):
    path = _rows_with_a_bad_value(seeded, "bad.csv")
    res = seeded.useg("ingest", "events", path, "--game", "strict_game")
    assert res.code == 2
    assert "invalid_input" in res.err and "value" in res.err
    assert "row " in res.err and "field value" in res.err
    assert res.out == ""
    assert _count_events(seeded.url, "strict_game") == 0
    assert not (seeded.dir / "bad.csv.rejects.csv").exists()


def test_ingest_daily_and_outcomes(seeded):
    assert seeded.outcomes.code == 0, seeded.outcomes.err
    assert seeded.outcomes.json() == {"game_id": GAME, "accepted": 400, "inserted": 400, "duplicates": 0,
                                      "rejected": 0}
    daily = pl.DataFrame({"player_id": ["d1", "d1", "d2"], "date": ["2026-02-27", "2026-02-28", "2026-02-28"],
                          "sessions": [2, 1, 3], "playtime_minutes": [30.0, 12.5, 50.0], "purchases": [0, 1, 0],
                          "spend": [0.0, 4.99, 0.0], "social_events": [1, 0, 5]})
    path = seeded.dir / "daily.csv"
    daily.write_csv(path)
    res = seeded.useg("ingest", "daily", path, "--game", "daily_game")
    assert res.code == 0, res.err
    assert res.json() == {"game_id": "daily_game", "accepted": 3, "inserted": 3, "duplicates": 0, "rejected": 0}
    bad = daily.with_columns(pl.when(pl.col("player_id") == "d2").then(-1).otherwise(pl.col("sessions"))
                             .alias("sessions"))
    bad_path = seeded.dir / "daily_bad.csv"
    bad.write_csv(bad_path)
    skipped = seeded.useg("ingest", "daily", bad_path, "--game", "daily_game", "--skip-invalid")
    assert skipped.code == 0, skipped.err
    assert skipped.json()["accepted"] == 2 and skipped.json()["rejected"] == 1
    outcomes = pl.DataFrame({"user": ["d1", "d2"], "ltv": [4.99, 0.0], "churned": [0, 1], "support_tickets": [0, 2]})
    out_path = seeded.dir / "their_outcomes.csv"
    outcomes.write_csv(out_path)
    res = seeded.useg("ingest", "outcomes", out_path, "--game", "daily_game", "--map", "player_id=user")
    assert res.code == 0, res.err
    assert res.json()["accepted"] == 2


# ---------------------------------------------------------------------------- taxonomy
def test_calibrate_prints_the_taxonomy(seeded):
    assert seeded.calibrate.code == 0, seeded.calibrate.err
    out = seeded.calibrate.out
    assert f"{GAME} taxonomy v1 as of" in out
    for axis in UNIVERSAL:
        assert axis in out


def test_taxonomy_versions_history_diff_and_rollback(seeded):
    v1 = seeded.useg("taxonomy", "show", GAME, "--json")
    assert v1.code == 0, v1.err
    tax1 = v1.json()
    assert tax1["game_id"] == GAME and tax1["taxonomy_version"] == 1
    assert {a["axis_id"] for a in tax1["universal_axes"]} >= set(UNIVERSAL)

    same = seeded.useg("calibrate", GAME, "--as-of", AS_OF)  # nothing changed: the active version again
    assert same.code == 0 and "taxonomy v1 " in same.out
    forced = seeded.useg("calibrate", "--game", GAME, "--as-of", AS_OF, "--force")
    assert forced.code == 0, forced.err
    assert "taxonomy v2 " in forced.out

    hist_path = seeded.dir / "history.jsonl"
    hist = seeded.useg("taxonomy", "history", GAME, "--output", hist_path)
    assert hist.code == 0, hist.err
    assert sorted(pl.read_ndjson(hist_path)["version"].to_list()) == [1, 2]
    table = seeded.useg("taxonomy", "history", GAME)
    assert table.code == 0 and "taxonomy versions" in table.out

    diff = seeded.useg("taxonomy", "diff", GAME, "--from", "1", "--to", "2")
    assert diff.code == 0, diff.err
    assert diff.out.strip().startswith("{") and json.loads(diff.out)

    shown = seeded.useg("taxonomy", "show", GAME)
    assert shown.code == 0 and "taxonomy v2 " in shown.out
    back = seeded.useg("taxonomy", "rollback", GAME)
    assert back.code == 0, back.err
    assert "active taxonomy is now v1" in back.out
    assert seeded.useg("taxonomy", "show", GAME, "--json").json()["taxonomy_version"] == 1

    path = seeded.dir / "tax2.json"
    res = seeded.useg("taxonomy", "show", GAME, "--version", "2", "--output", path)
    assert res.code == 0 and "wrote taxonomy v2" in res.out
    assert json.loads(path.read_text())["taxonomy_version"] == 2


# ---------------------------------------------------------------------------- categorize / anomalies
def test_categorize_one_player(seeded):
    res = seeded.useg("categorize", GAME, "--player", "test_player", "--as-of", AS_OF)
    assert res.code == 0, res.err
    prof = res.json()
    assert prof["player_id"] == "test_player" and prof["game_id"] == GAME
    assert set(UNIVERSAL) <= set(prof["axes"])
    path = seeded.dir / "player.json"
    res = seeded.useg("categorize", GAME, "-p", "test_player", "--as-of", AS_OF, "-o", path)
    assert res.code == 0 and f"wrote {path}" in res.out.replace("\n", "")
    assert json.loads(path.read_text())["axes"].keys() == prof["axes"].keys()


@pytest.mark.parametrize("suffix", ["parquet", "csv", "jsonl"])
def test_categorize_all_writes_one_row_per_player_and_axis(seeded, suffix):
    path = seeded.dir / f"segments.{suffix}"
    res = seeded.useg("categorize", GAME, "--all", "--as-of", AS_OF, "--output", path)
    assert res.code == 0, res.err
    assert f"categorized {len(seeded.players)} players of {GAME}" in res.out
    frame = {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}[suffix](path)
    assert set(frame["player_id"].to_list()) == seeded.players
    assert set(UNIVERSAL) <= set(frame["axis"].to_list())
    assert frame.select("player_id", "axis").is_duplicated().sum() == 0
    assert frame.height == len(seeded.players) * frame["axis"].n_unique()
    assert f"wrote {frame.height} rows to" in res.out


def test_categorize_all_as_a_table(seeded):
    res = seeded.useg("categorize", GAME, "--all", "--as-of", AS_OF)
    assert res.code == 0, res.err
    assert "primary segments" in res.out and "more rows (use --output PATH for all)" in res.out


def test_categorize_needs_player_or_all(seeded):
    res = seeded.useg("categorize", GAME)
    assert res.code == 2
    assert "--player" in res.err and "--all" in res.err


def test_anomalies_one_player_all_and_listing(seeded):
    one = seeded.useg("anomalies", GAME, "--player", "test_player", "--as-of", AS_OF)
    assert one.code == 0, one.err
    det = one.json()
    assert det["player_id"] == "test_player" and isinstance(det["is_anomalous"], bool)

    path = seeded.dir / "anomalies.parquet"
    every = seeded.useg("anomalies", "--game", GAME, "--all", "--as-of", AS_OF, "--output", path)
    assert every.code == 0, every.err
    assert f"of {len(seeded.players)} players anomalous" in every.out
    flagged = pl.read_parquet(path)
    assert flagged.height > 0 and flagged["is_anomalous"].all()
    assert set(flagged["player_id"].to_list()) <= seeded.players
    assert flagged["surprise"].to_list() == sorted(flagged["surprise"].to_list(), reverse=True)

    listing = seeded.useg("anomalies", GAME)
    assert listing.code == 0, listing.err
    assert "stored anomalies" in listing.out


# ---------------------------------------------------------------------------- game settings
def test_game_show_and_set(seeded):
    before = seeded.useg("game", "show", GAME)
    assert before.code == 0, before.err
    assert before.json()["timezone"] == "UTC"
    res = seeded.useg("game", "set", "settings_game", "timezone=Europe/London", "profile_days=365")
    assert res.code == 0, res.err
    assert res.json()["timezone"] == "Europe/London"
    shown = seeded.useg("game", "show", "settings_game").json()
    assert shown["timezone"] == "Europe/London" and shown["profile_days"] == 365


def test_game_set_bad_assignment_errors_clearly(seeded):
    res = seeded.useg("game", "set", "settings_game", "no_such_setting=3")
    assert res.code == 2
    assert "invalid_input" in res.err and "unknown setting 'no_such_setting'" in res.err
    res = seeded.useg("game", "set", "settings_game", "timezone")
    assert res.code == 2 and "expected key=value" in res.err


# ---------------------------------------------------------------------------- keys
def test_keys_create_list_revoke(seeded):
    res = seeded.useg("keys", "create", "--scope", "write", "--game", GAME, "--name", "ci")
    assert res.code == 0, res.err
    first, _, rest = res.out.partition("\n")
    key = first.split("key (shown once): ")[1].strip()
    info = json.loads(rest)
    assert key.startswith(f"useg_{info['key_prefix']}_")
    assert info["scope"] == "write" and info["games"] == [GAME] and "key_hash" not in info

    listed = seeded.useg("keys", "list")
    assert listed.code == 0 and info["key_prefix"] in listed.out and "key_hash" not in listed.out

    revoked = seeded.useg("keys", "revoke", info["key_prefix"])
    assert revoked.code == 0, revoked.err
    assert f"revoked key {info['key_prefix']}" in revoked.out
    with _services(seeded.url) as svc:
        assert svc.authenticate(key) is None
        stored = {k["key_prefix"]: k for k in svc.list_api_keys()}
    assert stored[info["key_prefix"]]["revoked_at"] is not None
    again = seeded.useg("keys", "revoke", info["key_prefix"])
    assert again.code == 2 and info["key_prefix"] in again.err


def test_keys_revoke_by_id_or_by_the_key_itself(seeded):
    by_id = json.loads(seeded.useg("keys", "create").out.partition("\n")[2])
    res = seeded.useg("keys", "revoke", str(by_id["id"]))
    assert res.code == 0, res.err
    whole = seeded.useg("keys", "create", "--scope", "admin").out.partition("\n")[0].split(": ")[1].strip()
    res = seeded.useg("keys", "revoke", whole)
    assert res.code == 0, res.err
    with _services(seeded.url) as svc:
        revoked = {k["key_prefix"] for k in svc.list_api_keys() if k["revoked_at"] is not None}
    assert by_id["key_prefix"] in revoked and whole.split("_")[1] in revoked


def test_keys_bad_scope(seeded):
    res = seeded.useg("keys", "create", "--scope", "superuser")
    assert res.code == 2 and "scope" in res.err


# ---------------------------------------------------------------------------- rollout / validate
def test_rollout_set_show_rollback(seeded):
    res = seeded.useg("rollout", "set", GAME, "--strategy", "gradual_rollout", "--percentage", "10")
    assert res.code == 0, res.err
    assert res.json()["strategy"] == "gradual_rollout" and res.json()["percentage"] == 10
    res = seeded.useg("rollout", "set", GAME, "--percentage", "25", "--legacy-url", "http://legacy.invalid/profile")
    assert res.code == 0, res.err
    shown = seeded.useg("rollout", "show", GAME).json()
    assert shown["configured"] and shown["percentage"] == 25 and shown["strategy"] == "gradual_rollout"
    assert shown["legacy"]["url"] == "http://legacy.invalid/profile"
    assert [a["actor"] for a in shown["audit"]][:2] == ["cli", "cli"]
    back = seeded.useg("rollout", "rollback", GAME)
    assert back.code == 0, back.err
    assert back.json()["percentage"] == 10 and back.json()["audit"][0]["action"] == "rollback"


def test_validate_a_sample(seeded):
    # the planted data ends at AS_OF: pin it (validate has no --as-of)
    pinned = seeded.useg("game", "set", GAME, f"default_as_of={AS_OF}")
    assert pinned.code == 0 and pinned.json()["default_as_of"] == AS_OF
    res = seeded.useg("validate", GAME, "--sample", "50")
    assert res.code == 0, res.err
    assert "50 players, equivalence rate" in res.out and "name map:" in res.out
    path = seeded.dir / "validation.json"
    res = seeded.useg("validate", "--game", GAME, "--sample", "50", "--output", path)
    assert res.code == 0, res.err
    assert json.loads(path.read_text())["sample_size"] == 50


# ---------------------------------------------------------------------------- demo
def test_demo(seeded):
    res = seeded.useg("demo", "--players", "600", "--seed", "1")
    assert res.code == 0, res.err
    assert "test_game: 600 players" in res.out.replace("\n", " ")
    assert "found vs planted" in res.out and "anomalies: planted vs flagged" in res.out
    assert "test_player: monetization=" in res.out
    with _services(seeded.url) as svc:
        assert svc.count_players("test_game") == 600


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("args", [("categorize", "no_such_game", "--player", "p1"), ("game", "show", "no_such_game"),
                                  ("taxonomy", "show", "no_such_game"), ("rollout", "show", "no_such_game")])
def test_unknown_game_exits_nonzero_naming_it(seeded, args):
    res = seeded.useg(*args)
    assert res.code == 2
    assert "no_such_game" in res.err and res.out == ""


def test_error_text_is_not_taken_for_markup(seeded):
    res = seeded.useg("game", "show", "[/x]")
    assert res.code == 2 and "[/x]" in res.err


def test_unknown_player_and_missing_game(seeded):
    res = seeded.useg("categorize", GAME, "--player", "nobody_at_all", "--as-of", AS_OF)
    assert res.code == 2 and "nobody_at_all" in res.err
    res = seeded.useg("calibrate")
    assert res.code == 2 and "give the game id" in res.err


def test_unknown_option_and_command():
    res = _invoke("calibrate", "g", "--no-such-option")
    assert res.code == 2 and "--no-such-option" in res.err
    res = _invoke("frobnicate")
    assert res.code == 2 and "frobnicate" in res.err


def test_serve_hands_the_options_to_the_server(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(server, "run", seen.append)  # never blocks: nothing is served
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    res = _invoke("serve", "--host", "127.0.0.1", "--port", "8765", "--workers", "2", "--database-url", url)
    assert res.code == 0, res.err
    (settings,) = seen
    assert (settings.host, settings.port, settings.workers, settings.url) == ("127.0.0.1", 8765, 2, url)


@pytest.mark.parametrize(("outcome", "code"), [(typer.Abort(), 130), (typer.Exit(4), 4), (3, 3), (None, None)])
def test_main_maps_aborts_and_exit_codes(monkeypatch, outcome, code):
    def fake_app(args, standalone_mode):
        assert standalone_mode is False
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(cli_app, "app", fake_app)
    if code is None:
        assert main(["anything"]) is None
    else:
        with pytest.raises(SystemExit) as exc:
            main(["anything"])
        assert exc.value.code == code


def test_main_lets_unexpected_errors_through(monkeypatch):
    def broken(args, standalone_mode):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_app, "app", broken)
    with pytest.raises(RuntimeError, match="boom"):
        main([])


def test_help_exits_zero():
    res = _invoke("--help")
    assert res.code == 0 and "Unified Behavioral Segmentation" in res.out and "calibrate" in res.out


# ---------------------------------------------------------------------------- api/server.py (no server started)
def test_uvicorn_options():
    opts = server.uvicorn_options(Settings(host="127.0.0.1", port=8123, database_url="sqlite:///x.db"))
    assert opts["host"] == "127.0.0.1" and opts["port"] == 8123
    assert opts["access_log"] is False and opts["proxy_headers"] is True and opts["timeout_graceful_shutdown"] == 30
    assert isinstance(opts["log_config"], dict)


def test_settings_environment_round_trips(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", workers=3, port=9000)
    env = server.settings_environment(settings)
    assert env["USEG_DATABASE_URL"] == settings.url and env["USEG_WORKERS"] == "3" and env["USEG_PORT"] == "9000"
    assert all(k.startswith("USEG_") for k in env)
    assert all(v in ("true", "false") for k, v in env.items()
               if isinstance(getattr(settings, k[5:].lower(), None), bool))
    rebuilt = Settings(**{k[5:].lower(): v for k, v in env.items()})
    assert rebuilt.url == settings.url and rebuilt.workers == 3 and rebuilt.port == 9000


def _isolate_env(monkeypatch, names):
    for name in names:  # recorded, then absent: restored (or removed again) at teardown
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def test_prepare_multiprocess_metrics(monkeypatch):
    _isolate_env(monkeypatch, ["PROMETHEUS_MULTIPROC_DIR"])
    path = server.prepare_multiprocess_metrics()
    try:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == path and Path(path).is_dir()
        assert Path(path).name.startswith("useg-metrics-")
    finally:
        Path(path).rmdir()


def test_run_one_worker_and_several(monkeypatch, tmp_path, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr("unified_segmentation.api.app.create_app", lambda settings: ("app", settings.workers))
    url = f"sqlite:///{tmp_path / 'srv.db'}"
    one = Settings(database_url=url, workers=1, port=8001)
    server.run(one)
    assert calls[-1][0] == ("app", 1) and calls[-1][1]["port"] == 8001 and "workers" not in calls[-1][1]
    assert "http://" in capsys.readouterr().out

    several = Settings(database_url=url, workers=2, port=8002)
    _isolate_env(monkeypatch, ["PROMETHEUS_MULTIPROC_DIR", *server.settings_environment(several)])
    server.run(several)
    app, kw = calls[-1]
    assert app == server.APP_FACTORY and kw["factory"] is True and kw["workers"] == 2
    assert os.environ["USEG_DATABASE_URL"] == several.url and os.environ["USEG_WORKERS"] == "2"
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert Path(metrics_dir).is_dir()
    Path(metrics_dir).rmdir()
    assert "2 workers" in capsys.readouterr().out
