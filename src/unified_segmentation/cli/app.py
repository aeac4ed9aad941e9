"""``useg``: the command-line shell over the services. Library code raises; only this module exits."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from ..errors import UsegError
from .output import console, err_console, print_json, progress, write_rows

app = typer.Typer(name="useg", help="Unified Behavioral Segmentation", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database migrations", no_args_is_help=True)
ingest_app = typer.Typer(help="Ingest events, daily aggregates or outcomes from CSV/Parquet", no_args_is_help=True)
taxonomy_app = typer.Typer(help="Show, list, diff and roll back taxonomy versions", no_args_is_help=True)
game_app = typer.Typer(help="Per-game settings", no_args_is_help=True)
rollout_app = typer.Typer(help="Migration rollout per game", no_args_is_help=True)
keys_app = typer.Typer(help="API keys", no_args_is_help=True)
for sub, name in ((db_app, "db"), (ingest_app, "ingest"), (taxonomy_app, "taxonomy"), (game_app, "game"),
                  (rollout_app, "rollout"), (keys_app, "keys")):
    app.add_typer(sub, name=name)

GameArg = Annotated[str | None, typer.Argument(help="game id", show_default=False)]
GameOpt = Annotated[str | None, typer.Option("--game", "-g", help="game id (alias of the argument)")]
AsOf = Annotated[str | None, typer.Option("--as-of", help="ISO-8601 time (naive = the game's time zone)")]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="write rows to .csv, .parquet or .jsonl")]
DbUrl = Annotated[str | None, typer.Option("--database-url", envvar="USEG_DATABASE_URL",
                                           help="database URL (default: DATABASE_URL, else ./useg.db)")]


def _game(arg: str | None, opt: str | None) -> str:
    g = arg or opt
    if not g:
        raise typer.BadParameter("give the game id as an argument or with --game")
    return g


def _services(url: str | None = None, *, upgrade: bool = True):
    from ..config import Settings
    from ..services.facade import Services

    settings = Settings.load(**({"database_url": url} if url else {}))
    svc = Services(settings.url, sslmode=settings.db_sslmode)
    if upgrade:
        svc.upgrade()
    return svc


def _click_errors() -> tuple[type[Exception], ...]:
    """``ClickException`` of the click that typer runs on (typer >= 0.2x vendors its own copy, which plain
    ``click.ClickException`` does not catch), and of click itself when installed."""
    found: list[type[Exception]] = [c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"]
    try:
        import click

        found.append(click.ClickException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning domain errors into messages and exit codes."""
    try:
        # standalone_mode=False: an explicit typer.Exit comes back as its exit code (e.g. 0 after --help)
        code = app(args=argv, standalone_mode=False)
    except UsegError as exc:
        from rich.markup import escape

        # the detail quotes user input (ids, paths, values): print it as text, never as markup
        err_console.print(f"[red]error[/red] {exc.code}: {escape(str(exc.detail))}")
        errs = exc.extra.get("errors")
        if errs:
            for e in errs[:10]:
                err_console.print(escape(f"  row {e.get('row')}, field {e.get('field')}: {e.get('message')}"))
        sys.exit(2 if exc.status < 500 else 1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors and friends
        if isinstance(exc, _click_errors()):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


# ---------------------------------------------------------------------------- serve / db
@app.command()
def serve(host: Annotated[str | None, typer.Option(help="bind address (USEG_HOST)")] = None,
          port: Annotated[int | None, typer.Option(help="port (USEG_PORT, else PORT, else 8000)")] = None,
          workers: Annotated[int | None, typer.Option(help="uvicorn workers (USEG_WORKERS)")] = None,
          database_url: DbUrl = None) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    from ..api.server import run
    from ..config import Settings

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers,
                                    "database_url": database_url}.items() if v is not None}
    run(Settings.load(**overrides))


@db_app.command("upgrade")
def db_upgrade(database_url: DbUrl = None) -> None:
    """Apply the Alembic migrations up to head."""
    svc = _services(database_url, upgrade=False)
    svc.upgrade()
    console.print(f"database at head: {_mask(svc.url)}")


@db_app.command("current")
def db_current(database_url: DbUrl = None) -> None:
    """Show the database's migration revision."""
    from ..storage import migrate

    svc = _services(database_url, upgrade=False)
    console.print(f"current: {migrate.current_revision(svc.url)}  head: {migrate.head_revision()}")


def _emit(obj: dict, output: Path | None) -> None:
    """One JSON answer: to ``output`` as a JSON line, else pretty on the terminal."""
    if output:
        output.write_text(json.dumps(obj, default=str) + "\n")
        console.print(f"wrote {output}")
    else:
        print_json(obj)


def _mask(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url


# ---------------------------------------------------------------------------- ingest
Mapping = Annotated[list[str] | None, typer.Option("--map", help="ours=theirs or theirs=ours (column or Polars SQL)")]


def _ingest(kind: str, file: Path, game: str, mapping, skip_invalid: bool, database_url, **kw) -> None:
    from ..ingest import read_daily, read_events, read_outcomes
    from ..ingest.mapping import parse_map_options

    svc = _services(database_url)
    # --timezone (naive timestamps of this file) overrides the game's zone; never passed twice
    tz = kw.pop("timezone", None) or svc.game_timezone(game)
    ours = {"events": ["event_id", "player_id", "event_type", "timestamp", "value", "properties"],
            "daily": ["player_id", "date", "sessions", "playtime_minutes", "purchases", "spend", "social_events",
                      "night_playtime_minutes", "social_sessions"],
            "outcomes": ["player_id", "ltv", "churned", "support_tickets"]}[kind]
    m = parse_map_options(mapping or [], ours) if mapping else None
    rejects = None
    with progress(f"reading {file.name}"):
        if kind == "events":
            res = read_events(file, timezone=tz, mapping=m, skip_invalid=skip_invalid, **kw)
        elif kind == "daily":
            res = read_daily(file, mapping=m, skip_invalid=skip_invalid)
        else:
            res = read_outcomes(file, mapping=m)
    if isinstance(res, tuple):
        res, rejects = res
    with progress(f"storing {res.height} rows"):
        summary = getattr(svc, f"ingest_{kind}")(game, res)
    if rejects is not None and rejects.height:
        path = Path.cwd() / f"{file.name}.rejects.csv"
        rejects.write_csv(path)
        summary["rejected"] = rejects.height
        summary["reject_file"] = str(path)
    else:
        summary["rejected"] = 0
    print_json(summary)


@ingest_app.command("events")
def ingest_events(file: Path, game: GameOpt = None, mapping: Mapping = None,
                  group_by: Annotated[list[str] | None, typer.Option("--group-by")] = None,
                  epoch_unit: Annotated[str, typer.Option("--epoch-unit")] = "s",
                  timezone: Annotated[str | None, typer.Option("--timezone")] = None,
                  allow_duplicates: Annotated[bool, typer.Option("--allow-duplicates")] = False,
                  skip_invalid: Annotated[bool, typer.Option("--skip-invalid")] = False,
                  database_url: DbUrl = None) -> None:
    """Ingest an events file (CSV, CSV.gz, Parquet, JSON lines)."""
    kw = {"group_by": group_by, "epoch_unit": epoch_unit, "allow_duplicates": allow_duplicates}
    if timezone:
        kw["timezone"] = timezone
    _ingest("events", file, _game(None, game), mapping, skip_invalid, database_url, **kw)


@ingest_app.command("daily")
def ingest_daily(file: Path, game: GameOpt = None, mapping: Mapping = None,
                 skip_invalid: Annotated[bool, typer.Option("--skip-invalid")] = False,
                 database_url: DbUrl = None) -> None:
    """Ingest daily aggregates (one row per player per day)."""
    _ingest("daily", file, _game(None, game), mapping, skip_invalid, database_url)


@ingest_app.command("outcomes")
def ingest_outcomes(file: Path, game: GameOpt = None, mapping: Mapping = None, database_url: DbUrl = None) -> None:
    """Ingest per-player outcomes (ltv, churned, support_tickets)."""
    _ingest("outcomes", file, _game(None, game), mapping, False, database_url)


# ---------------------------------------------------------------------------- calibrate / score
@app.command()
def calibrate(game_id: GameArg = None, game: GameOpt = None, as_of: AsOf = None,
              force: Annotated[bool, typer.Option("--force")] = False, database_url: DbUrl = None) -> None:
    """Calibrate (discover) the game's taxonomy; prints a summary."""
    svc = _services(database_url)
    with progress("calibrating"):
        tax = svc.calibrate(_game(game_id, game), as_of=as_of, force=force)
    _print_taxonomy(tax)


def _print_taxonomy(tax: dict) -> None:
    console.print(f"[bold]{tax['game_id']}[/bold] taxonomy v{tax['taxonomy_version']} as of {tax['as_of']}: "
                  f"{tax['total_axes_count']} axes, {tax['total_segments_count']} segments, "
                  f"variance explained {tax['variance_explained']:.3f}")
    rows = []
    for axis in tax["universal_axes"] + tax["game_specific_axes"]:
        rows.append({"axis": axis["axis_id"], "k": axis["segment_count"],
                     "variance_explained": axis["variance_explained"], "null": axis["variance_explained_null"],
                     "degenerate": axis["degenerate"],
                     "segments": ", ".join(f"{s['segment_name']} {s['population_percentage']:.1f}%"
                                           for s in axis["segments"])})
    write_rows(pl.DataFrame(rows), None)
    if tax["quality"]["flagged"]:
        console.print(f"[yellow]quality flags:[/yellow] {'; '.join(tax['quality']['reasons'])}")


@app.command()
def categorize(game_id: GameArg = None, game: GameOpt = None,
               player: Annotated[str | None, typer.Option("--player", "-p")] = None,
               all_players: Annotated[bool, typer.Option("--all")] = False, as_of: AsOf = None,
               output: Output = None, database_url: DbUrl = None) -> None:
    """Categorize one player (--player) or every player (--all, persisted in bulk)."""
    g = _game(game_id, game)
    svc = _services(database_url)
    if player:
        _emit(svc.categorize(g, player, as_of=as_of), output)
        return
    if not all_players:
        raise typer.BadParameter("give --player P or --all")
    players = svc.count_players(g)
    with progress("categorizing", total=players) as advance:
        summary = svc.categorize_all(g, as_of=as_of, progress=advance)
    console.print(f"categorized {summary['players']} players of {g} with taxonomy v{summary['taxonomy_version']}: "
                  f"{summary['rows_written']} rows in {summary['seconds']:.1f} s "
                  f"({summary['players_per_s']:.0f} players/s)")
    frame = svc.primary_segments(g, summary["taxonomy_version"])
    write_rows(frame, output, title="primary segments")


@app.command()
def anomalies(game_id: GameArg = None, game: GameOpt = None,
              player: Annotated[str | None, typer.Option("--player", "-p")] = None,
              all_players: Annotated[bool, typer.Option("--all")] = False, as_of: AsOf = None,
              output: Output = None, database_url: DbUrl = None) -> None:
    """Detect anomalies for one player (--player) or every player (--all, persisted)."""
    g = _game(game_id, game)
    svc = _services(database_url)
    if player:
        det = svc.detect(g, player, as_of=as_of)
        svc.flush()
        _emit(det, output)
        return
    if not all_players:
        listing = svc.list_anomalies(g, limit=1000)
        write_rows(pl.DataFrame(listing["items"]) if listing["items"] else pl.DataFrame(), output,
                   title="stored anomalies (by surprise)")
        return
    with progress("detecting"):
        summary = svc.detect_all(g, as_of=as_of)
    res = summary.pop("result")
    console.print(f"{summary['anomalous']} of {summary['players']} players anomalous "
                  f"({summary['seconds']:.1f} s); {len(summary['shifts'])} game-wide shifts")
    from ..pipeline import detections_frame

    frame = detections_frame(res).filter(pl.col("is_anomalous")).sort("surprise", descending=True)
    write_rows(frame, output, title="anomalous players")


# ---------------------------------------------------------------------------- taxonomy
@taxonomy_app.command("show")
def taxonomy_show(game_id: GameArg = None, game: GameOpt = None,
                  version: Annotated[int | None, typer.Option("--version")] = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False, output: Output = None,
                  database_url: DbUrl = None) -> None:
    """Show the active (or a given) taxonomy version."""
    tax = _services(database_url).get_taxonomy(_game(game_id, game), version)
    if output:
        output.write_text(json.dumps(tax, default=str))
        console.print(f"wrote taxonomy v{tax['taxonomy_version']} to {output}")
    elif as_json:
        print_json(tax)
    else:
        _print_taxonomy(tax)


@taxonomy_app.command("history")
def taxonomy_history(game_id: GameArg = None, game: GameOpt = None, output: Output = None,
                     database_url: DbUrl = None) -> None:
    """List the game's taxonomy versions."""
    rows = _services(database_url).taxonomy_history(_game(game_id, game))
    write_rows(pl.DataFrame(rows), output, title="taxonomy versions")


@taxonomy_app.command("rollback")
def taxonomy_rollback(game_id: GameArg = None, game: GameOpt = None,
                      version: Annotated[int | None, typer.Option("--version")] = None,
                      database_url: DbUrl = None) -> None:
    """Reactivate the previous (or a given) version."""
    tax = _services(database_url).rollback(_game(game_id, game), version)
    console.print(f"active taxonomy is now v{tax['taxonomy_version']}")


@taxonomy_app.command("diff")
def taxonomy_diff(game_id: GameArg = None, a: Annotated[int, typer.Option("--from")] = 1,
                  b: Annotated[int, typer.Option("--to")] = 2, game: GameOpt = None,
                  database_url: DbUrl = None) -> None:
    """Segments kept, renamed, added and removed between two versions."""
    print_json(_services(database_url).diff(_game(game_id, game), a, b))


# ---------------------------------------------------------------------------- game settings
@game_app.command("show")
def game_show(game_id: GameArg = None, game: GameOpt = None, database_url: DbUrl = None) -> None:
    """Show the game's settings."""
    print_json(_services(database_url).get_settings(_game(game_id, game)))


@game_app.command("set")
def game_set(game_id: Annotated[str, typer.Argument()],
             assignments: Annotated[list[str], typer.Argument(help="key=value ...")],
             database_url: DbUrl = None) -> None:
    """Change settings (creates the game): ``useg game set G timezone=Europe/London profile_days=365``."""
    from ..game_settings import GameSettings

    print_json(_services(database_url).put_settings(game_id, GameSettings.parse_assignments(assignments),
                                                    actor="cli"))


# ---------------------------------------------------------------------------- keys
@keys_app.command("create")
def keys_create(scope: Annotated[str, typer.Option("--scope")] = "read",
                games: Annotated[list[str] | None, typer.Option("--game")] = None,
                name: Annotated[str | None, typer.Option("--name")] = None, database_url: DbUrl = None) -> None:
    """Create an API key (printed once; stored hashed)."""
    key, info = _services(database_url).create_api_key(scope, games=games, name=name)
    console.print(f"key (shown once): [bold]{key}[/bold]")
    print_json(info)


@keys_app.command("list")
def keys_list(database_url: DbUrl = None) -> None:
    """List API keys (never their secrets)."""
    rows = _services(database_url).list_api_keys()
    write_rows(pl.DataFrame(rows) if rows else pl.DataFrame(), None, title="API keys")


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="the key's prefix or id (as in `useg keys list`), "
                                                        "or the key itself")],
                database_url: DbUrl = None) -> None:
    """Revoke an API key by prefix, id or the key itself."""
    svc = _services(database_url)
    parts = key.split("_")
    prefix = parts[1] if len(parts) >= 3 and parts[0] == "useg" else key
    known = svc.list_api_keys()
    if key.isdigit() and not any(k.get("key_prefix") == prefix for k in known):
        prefix = next((k["key_prefix"] for k in known if str(k.get("id")) == key), prefix)
    svc.revoke_api_key(prefix)
    console.print(f"revoked key {prefix}")


# ---------------------------------------------------------------------------- rollout / validate
@rollout_app.command("show")
def rollout_show(game_id: GameArg = None, game: GameOpt = None, database_url: DbUrl = None) -> None:
    """Show the game's rollout configuration and its recent audit trail."""
    print_json(_services(database_url).get_rollout(_game(game_id, game)))


@rollout_app.command("set")
def rollout_set(game_id: Annotated[str, typer.Argument()],
                strategy: Annotated[str | None, typer.Option(help="parallel_only|shadow_mode|gradual_rollout|"
                                                                    "full_rollout")] = None,
                percentage: Annotated[float | None, typer.Option(help="0-100")] = None,
                shadow_sample: Annotated[float | None, typer.Option(help="0-100")] = None,
                legacy_url: Annotated[str | None, typer.Option(help="the studio's legacy endpoint (HTTP)")] = None,
                database_url: DbUrl = None) -> None:
    """Change the rollout (audited)."""
    body: dict = {k: v for k, v in {"strategy": strategy, "percentage": percentage,
                                    "shadow_sample": shadow_sample}.items() if v is not None}
    if legacy_url:
        body["legacy"] = {"type": "http", "url": legacy_url}
    print_json(_services(database_url).put_rollout(game_id, body, actor="cli"))


@rollout_app.command("rollback")
def rollout_rollback(game_id: GameArg = None, game: GameOpt = None, database_url: DbUrl = None) -> None:
    """Return to the previous rollout configuration (one call, audited)."""
    print_json(_services(database_url).rollback_rollout(_game(game_id, game), actor="cli"))


@app.command()
def validate(game_id: GameArg = None, game: GameOpt = None,
             sample: Annotated[int, typer.Option("--sample", help="players to compare")] = 500,
             output: Output = None, database_url: DbUrl = None) -> None:
    """Migration validator: legacy vs unified on a sample; the report is stored (useg validate --list)."""
    with progress("validating"):
        report = _services(database_url).validate(_game(game_id, game), sample=sample)
    if output:
        output.write_text(json.dumps(report, default=str))
        console.print(f"wrote validation report {report['id']} to {output}")
        return
    console.print(f"report {report['id']}: {report['sample_size']} players, equivalence rate "
                  f"{report['equivalence_rate']:.2f}, classes {report['classes']}, anomaly agreement "
                  f"{report['anomalies']}")
    console.print(f"name map: {report['name_map']}")


# ---------------------------------------------------------------------------- demo
@app.command()
def demo(players: Annotated[int, typer.Option(help="players in the demo game")] = 5000,
         seed: Annotated[int, typer.Option()] = 0,
         serve_after: Annotated[bool, typer.Option("--serve", help="serve the API afterwards")] = False,
         database_url: DbUrl = None) -> None:
    """Generate the demo game (test_game, player test_player), ingest, calibrate, categorize, detect, and print
    what was found next to what was planted."""
    from .demo import run_demo

    svc = _services(database_url)
    console.print(f"database: {_mask(svc.url)}")
    run_demo(svc, players=players, seed=seed)
    if serve_after:
        serve(database_url=database_url)


if __name__ == "__main__":  # pragma: no cover
    main()
