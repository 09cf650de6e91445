"""Command line: parse arguments, load the config, run, map the outcome to an exit code.

Exit codes (the operators' contract): 0 every check passed and the MERGE committed;
1 a reconciliation check failed; 2 bad usage, configuration or input structure;
3 a runtime failure (a worker died or hung, the database failed, the run was interrupted).
Errors reach the operator as one sentence on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.jobs import shipped_config
from pipeline.logs import FORMATS, LEVELS, configure_logging, run_context

if TYPE_CHECKING:
    from pipeline.job import RunOutcome

log = logging.getLogger("pipeline.cli")
DB_URL_ENV = "PIPELINE_DB_URL"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        return int(args.command(args))
    except PipelineError as exc:
        _error(args, str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error(args, "interrupted")
        return 3
    except Exception as exc:  # noqa: BLE001 - the operator gets a sentence, not a traceback
        log.debug("traceback of the internal error", exc_info=True)
        _error(args, f"internal error ({type(exc).__name__}: {exc}); "
                     "rerun with --log-level DEBUG for the traceback")
        return 3


def _error(args: argparse.Namespace, message: str) -> None:
    if args.log_format == "json":  # a log shipper wants every stderr line as JSON
        log.error(message)
    else:
        print(f"error: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from pipeline.job import run_job
    from pipeline.progress import progress_display
    from pipeline.summary import format_summary

    config = _config(args)
    progress = progress_display(enabled=not args.no_progress)
    started = time.monotonic()
    with progress or nullcontext():
        outcome = run_job(config, on_tick=progress)
    duration = time.monotonic() - started
    with run_context(outcome.run_id):
        report = _write_html_report(config, outcome)
        if config.prometheus_textfile is not None:
            _write_prometheus(config.prometheus_textfile, outcome, duration)
    text = format_summary(outcome, config.amount_field.scale, report=report)
    if outcome.run_dir.is_dir():
        (outcome.run_dir / "summary.txt").write_text(text + "\n", encoding="utf-8")
    _emit(text)
    return outcome.exit_code


def _emit(text: str) -> None:
    """Print to stdout; a reader that went away (``| head``) is not an error of the job."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # keep the interpreter's own flush at exit from failing on the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _write_html_report(config: JobConfig, outcome: RunOutcome) -> Path | None:
    """report.html beside the run's other output, read back from the audit just committed."""
    from pipeline.reporting.htmlpage import render_html
    from pipeline.reporting.store import load_report, open_audit

    if not outcome.run_dir.is_dir():
        return None  # the run never got as far as its output folder
    target = outcome.run_dir / "report.html"
    try:
        with open_audit(config.database_url) as engine:
            report = load_report(engine, outcome.run_id, _scales(config))
        target.write_text(render_html(report), encoding="utf-8")
    except (PipelineError, OSError) as exc:
        log.warning("report.html not written: %s", exc)
        return None
    log.info("report written: %s", target)
    return target


def _write_prometheus(path: Path, outcome: RunOutcome, duration: float) -> None:
    from pipeline.metrics.prometheus import write_run_metrics

    try:
        write_run_metrics(path, outcome, duration)
    except OSError as exc:
        # monitoring must hear about it, but the run's own result stands
        log.warning("prometheus textfile %s not written: %s", path, exc)
        return
    log.info("prometheus metrics written: %s", path)


def _load_config(path: Path | None) -> JobConfig:
    """A TOML file, or the name of a job shipped with the package ("customer_balances")."""
    if path is None:
        return load_config(shipped_config())
    shipped = shipped_config(str(path))
    if not path.exists() and path.suffix == "" and shipped.exists():
        return load_config(shipped)
    return load_config(path)


def _db_option(parser: argparse.ArgumentParser) -> None:
    # A password on the command line is visible to every user in ps; the environment
    # variable keeps it out of the process list.
    parser.add_argument("--db", default=os.environ.get(DB_URL_ENV) or None,
                        help=f"SQLAlchemy database URL (default: ${DB_URL_ENV}, "
                             "else the config's database.url)")


def _config(args: argparse.Namespace) -> JobConfig:
    config = _load_config(args.config)
    return config.with_overrides(input_path=args.input, database_url=args.db,
                                 processors=args.processors, writers=args.writers,
                                 batch_size=args.batch_size,
                                 prometheus_textfile=args.prometheus_textfile)


def _report(args: argparse.Namespace) -> int:
    from pipeline.reporting.store import load_report, open_audit

    config_path, run_id = _config_and_run_id(args.targets)
    config = _load_config(config_path)
    with open_audit(args.db or config.database_url) as engine:
        report = load_report(engine, run_id, _scales(config))
    if args.html:
        from pipeline.reporting.htmlpage import render_html

        args.html.write_text(render_html(report), encoding="utf-8")
        _emit(f"wrote {args.html}")
    elif args.json:
        from pipeline.reporting.jsondoc import report_document

        _emit(json.dumps(report_document(report), indent=2))
    else:
        from pipeline.reporting.text import format_report

        _emit(format_report(report))
    return 0


def _scales(config: JobConfig) -> dict[str, int]:
    # Only a job's own config knows its amount scale; a run of another job is shown at the
    # audit's exact scale rather than a guessed one.
    return {config.name: config.amount_field.scale}


def _runs(args: argparse.Namespace) -> int:
    from pipeline.reporting.store import list_runs, open_audit

    if args.limit < 1:
        raise ConfigError(f"--limit: expected a positive number, got {args.limit}")
    config = _load_config(args.config)
    with open_audit(args.db or config.database_url) as engine:
        runs = list_runs(engine, args.limit)
    if args.json:
        from pipeline.reporting.jsondoc import runs_document

        _emit(json.dumps(runs_document(runs), indent=2))
    else:
        from pipeline.reporting.text import format_runs

        _emit(format_runs(runs))
    return 0


def _config_and_run_id(targets: list[str]) -> tuple[Path | None, str | None]:
    """``report [RUN_ID] [CONFIG]`` in either order: a TOML file is the config."""
    configs = [t for t in targets if t.endswith(".toml") or Path(t).is_file()]
    run_ids = [t for t in targets if t not in configs]
    if len(configs) > 1 or len(run_ids) > 1:
        raise ConfigError("report takes at most one RUN_ID and one CONFIG (a .toml file)")
    return (Path(configs[0]) if configs else None), (run_ids[0] if run_ids else None)


def _generate(args: argparse.Namespace) -> int:
    from pipeline.generate import generate_file
    from pipeline.generate_mainframe import generate_mainframe_file

    options = {"seed": args.seed, "reject_rate": args.reject_rate,
               "duplicate_rate": args.duplicate_rate}
    try:
        if args.format == "fixed":
            made = generate_file(args.out, args.records, **options)
        else:
            made = generate_mainframe_file(args.out, args.records, args.format, **options)
    except (ValueError, OSError) as exc:
        _error(args, str(exc))
        return 2
    _emit(f"wrote {made.records:,} detail records to {made.path} "
          f"({made.rejects:,} rejectable, {made.duplicates:,} duplicate keys)")
    return 0


def _logging_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=LEVELS, default="INFO", type=str.upper,
                        help="job log detail on stderr (default INFO)")
    common.add_argument("--log-format", choices=FORMATS, default="text",
                        help="text, or json: one JSON object per line for log shippers")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    common = [_logging_options()]

    run = sub.add_parser("run", parents=common, help="run a batch job and reconcile it")
    run.add_argument("config", nargs="?", type=Path,
                     help="job config (TOML) or the name of a shipped job; default: the "
                          "daily-transactions job")
    run.add_argument("--input", type=Path, help="input file (overrides input.path)")
    _db_option(run)
    run.add_argument("--processors", type=int, help="processor worker processes")
    run.add_argument("--writers", type=int, help="writer worker processes")
    run.add_argument("--batch-size", type=int, help="records per batch")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (terminal) or progress log lines (otherwise)")
    run.add_argument("--prometheus-textfile", type=Path, metavar="PATH",
                     help="write the run's metrics here for node_exporter's textfile "
                          "collector (overrides output.prometheus_textfile)")
    run.set_defaults(command=_run)

    report = sub.add_parser("report", parents=common,
                            help="show a run's checks and workers from the audit tables")
    report.add_argument("targets", nargs="*", metavar="RUN_ID|CONFIG",
                        help="the run (default: the latest) and/or the job config whose "
                             "database to read (default: the shipped job's)")
    _db_option(report)
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="JSON, amounts as exact strings")
    output.add_argument("--html", type=Path, metavar="PATH",
                        help="write a self-contained HTML report to PATH")
    report.set_defaults(command=_report)

    runs = sub.add_parser("runs", parents=common, help="list recent runs")
    runs.add_argument("config", nargs="?", type=Path,
                      help="job config whose database to read (default: the shipped job's)")
    _db_option(runs)
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    runs.add_argument("--json", action="store_true", help="JSON instead of a table")
    runs.set_defaults(command=_runs)

    gen = sub.add_parser("generate", parents=common, help="write a valid sample input file")
    gen.add_argument("--records", type=int, required=True)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--reject-rate", type=float, default=0.0)
    gen.add_argument("--duplicate-rate", type=float, default=0.0)
    gen.add_argument("--format", choices=("fixed", "ebcdic-fb", "ebcdic-vb"), default="fixed",
                     help="fixed: the text example job's input; ebcdic-fb/ebcdic-vb: the "
                          "daily_transactions_ebcdic job's (cp037, COMP-3, FB or VB)")
    gen.set_defaults(command=_generate)
    return parser


if __name__ == "__main__":
    sys.exit(main())
