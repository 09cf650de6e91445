"""Command line: parse arguments, load the config, run, map the outcome to an exit code.

Exit codes (the operators' contract): 0 every check passed and the MERGE committed;
1 a reconciliation check failed; 2 bad usage, configuration or input structure;
3 a runtime failure (a worker died or hung, the database failed, the run was interrupted).
Errors reach the operator as one sentence on stderr, never as a traceback.
"""

from __future__ import annotations

import os

from pipeline import interrupts  # the standard library only: in place within milliseconds

START_GATE_ENV = "PIPELINE_START_GATE"


def _start_gate() -> None:
    """For tests: start-up waits here, the signal handler in place and nothing heavy
    imported yet, until a byte comes through the FIFO ``$PIPELINE_START_GATE`` names (a
    test's deterministic "during start-up", where a sleep would race)."""
    gate = os.environ.get(START_GATE_ENV)
    if gate:
        with open(gate, "rb") as fifo:
            fifo.read(1)


if __name__ == "__main__":  # before the imports below: a SIGTERM during them is recorded
    interrupts.record_early()
    _start_gate()

import argparse
import gc
import json
import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

try:  # a Python without the job's packages (the venv not activated) gets a sentence
    import numpy  # noqa: F401
    import sqlalchemy  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess test
    sys.exit(f"error: {exc.name} is not installed for {sys.executable}: activate the "
             "project's virtual environment (. .venv/bin/activate) or run .venv/bin/pipeline")

import pipeline
from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.jobs import shipped_config
from pipeline.logs import FORMATS, LEVELS, configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pipeline.outcome import RunOutcome

log = logging.getLogger("pipeline.cli")
DB_URL_ENV = "PIPELINE_DB_URL"


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """The command ``argv`` names; its exit code. ``exiting``: the process ends once it
    returns (``exit_process``), so SIGTERM/SIGINT stay recorded, never fatal, through the
    interpreter's end: a signal after the run's audit committed must not end the process
    with signal 15, an exit code the audit contradicts. Called in-process (tests), the
    handlers in place before are put back."""
    interrupts.record_early()  # the console script's first chance (python -m: at import)
    try:
        return _main(argv)
    finally:
        if not exiting:
            interrupts.end_early()


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    if args.command is not _run_to_the_end:
        interrupts.end_early()  # no safe points to stop at: a signal ends it as it always did
    if interrupts.requested():  # it came while the interpreter was starting
        _error(args, f"{interrupts.message()} before the {_command_name(args)} started; "
                     "nothing was done")
        return 3
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


def _command_name(args: argparse.Namespace) -> str:
    return "run" if args.command is _run_to_the_end else args.command.__name__.strip("_")


def _error(args: argparse.Namespace, message: str) -> None:
    if args.log_format == "json":  # a log shipper wants every stderr line as JSON
        log.error(message)
    else:
        print(f"error: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from pipeline.identity import Overrides
    from pipeline.job import run_job
    from pipeline.progress import progress_display
    from pipeline.publish import publish_outputs

    config = _config(args)
    try:  # the run's folder, and the default database, live there
        config.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output.dir {config.output_dir}: cannot create it "
                          f"({exc.strerror})") from None
    started = time.monotonic()
    if args.resume:
        outcome = _resume(args, config)
    else:
        progress = progress_display(enabled=not args.no_progress)
        overrides = Overrides(rerun=args.rerun, allow_older=args.allow_older)
        with progress or nullcontext():
            outcome = run_job(config, progress=progress, overrides=overrides)
    duration = time.monotonic() - started
    published = publish_outputs(outcome, config, duration)
    _emit(published.summary)
    return outcome.exit_code


def _run_to_the_end(args: argparse.Namespace) -> int:
    """``run`` with SIGTERM/SIGINT handled until the process exits: a signal after the
    audit committed must not kill the process with an exit code the audit contradicts
    (the run itself stops at its safe points: pipeline.interrupts)."""
    from pipeline import interrupts

    with interrupts.handling():
        return _run(args)


def _resume(args: argparse.Namespace, config: JobConfig) -> RunOutcome:
    from pipeline.resume import resume_run

    if args.input is not None:
        raise ConfigError("run --resume finishes a run from its staging rows: it takes no "
                          "--input")
    if args.rerun or args.allow_older:
        raise ConfigError("run --resume finishes the run it names, never a new load of a "
                          "file: it takes no --rerun or --allow-older")
    return resume_run(config, args.resume)


def _validate(args: argparse.Namespace) -> int:
    from pipeline.job import new_run_id, resolve_input
    from pipeline.validate import format_validation, validate_input

    config = _load_config(args.config).with_overrides(input_path=args.input)
    out_dir = config.output_dir / "validate" / new_run_id()
    found = validate_input(config, resolve_input(config), out_dir)
    text = format_validation(found, config.name, config.amount_field.scale)
    (out_dir / "summary.txt").write_text(text + "\n", encoding="utf-8")
    _emit(text)
    return found.exit_code


def _emit(text: str) -> None:
    """Print to stdout; a reader that went away (``| head``) is not an error of the job."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # keep the interpreter's own flush at exit from failing on the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
    from pipeline.audit.reader import load_report, open_audit
    from pipeline.publish import job_scales, report_extras

    config_path, run_id = _config_and_run_id(args.targets)
    config = _load_config(config_path)
    # `report customer_balances`: that job's latest run; with no config, any job's
    job = config.name if config_path is not None and run_id is None else None
    with open_audit(args.db or config.database_url) as engine:
        _settle_journals(engine, config, "`pipeline report`")
        report = load_report(engine, run_id, job_scales(config), job)
        extras = report_extras(config, engine, report) if args.html or args.json else ([], None)
    if args.html:
        from pipeline.publish import history_page
        from pipeline.reporting.htmlpage import render_html

        # the job's history page, where the job's runs publish it, linked as from the page
        history = history_page(config)
        href = (os.path.relpath(history, args.html.resolve().parent)
                if history.exists() and report.run.job_name == config.name else None)
        try:
            args.html.write_text(render_html(report, *extras, history=href), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--html {args.html}: cannot write it ({exc.strerror})") from None
        _emit(f"wrote {args.html}")
    elif args.json:
        from pipeline.reporting.jsondoc import report_document

        _emit(json.dumps(report_document(report, *extras), indent=2))
    else:
        from pipeline.reporting.text import format_report

        _emit(format_report(report))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from pipeline.audit.reader import open_audit
    from pipeline.explain import explain_run, format_explanation, write_csv

    config_path, run_id = _config_and_run_id(args.targets)
    config = _load_config(config_path)
    if args.limit < 1:
        raise ConfigError(f"--limit: expected a positive number, got {args.limit}")
    with open_audit(args.db or config.database_url) as engine:
        found = explain_run(config, engine, run_id, limit=args.limit,
                            everything=args.csv is not None)
    text = format_explanation(found)
    if args.csv is not None:
        try:
            written = write_csv(args.csv, found)
        except OSError as exc:
            raise ConfigError(f"--csv {args.csv}: cannot write ({exc.strerror})") from None
        text += f"\nwrote {written:,} records to {args.csv}"
    _emit(text)
    return 0


def _runs(args: argparse.Namespace) -> int:
    from pipeline.audit.reader import list_runs, open_audit

    if args.limit < 1:
        raise ConfigError(f"--limit: expected a positive number, got {args.limit}")
    config = _load_config(args.config)
    # `runs customer_balances` means that job's runs; without a config, every job's
    job = args.job or (config.name if args.config is not None else None)
    with open_audit(args.db or config.database_url) as engine:
        _settle_journals(engine, config, "`pipeline runs`")
        runs = list_runs(engine, args.limit, job)
    if args.json:
        from pipeline.reporting.jsondoc import runs_document

        _emit(json.dumps(runs_document(runs), indent=2))
    else:
        from pipeline.reporting.text import format_runs

        _emit(format_runs(runs))
    return 0


def _history(args: argparse.Namespace) -> int:
    from pipeline.audit.reader import open_audit
    from pipeline.reporting.history import format_history, history_document, load_history

    if args.nights < 1:
        raise ConfigError(f"--nights: expected a positive number, got {args.nights}")
    config = _load_config(args.config)
    job = args.job or config.name
    scale = config.amount_field.scale if job == config.name else None
    with open_audit(args.db or config.database_url) as engine:
        history = load_history(engine, job, args.nights, config.volume, scale)
    if args.html:
        from pipeline.reporting.historypage import write_history_page

        try:
            write_history_page(args.html, history, config.output_dir)
        except OSError as exc:
            raise ConfigError(f"--html {args.html}: cannot write it ({exc.strerror})") from None
        _emit(f"wrote {args.html}")
    elif args.json:
        def page(run_id: str) -> str:  # a monitor follows an absolute path from anywhere
            return str((config.output_dir / "runs" / run_id / "report.html").resolve())

        _emit(json.dumps(history_document(history, page), indent=2))
    else:
        _emit(format_history(history))
    return 0


def _settle_journals(engine: Engine, config: JobConfig, by: str) -> None:
    """Record the ends that runs kept on disk when the database could not take them
    (pipeline.audit.journal), so that what is shown is how they ended."""
    from pipeline.audit import journal
    from pipeline.audit.runs import RunRepository
    from pipeline.db.tables import job_tables

    runs = RunRepository(engine, job_tables(config).batch_run, config.amount_field.scale)
    try:
        ends = runs.settle_journalled(journal.reader_for(config.output_dir), by)
    except PipelineError as exc:  # a read-only reporting account, say: show what is there
        log.warning("journalled run ends not recorded: %s", exc)
        return
    journal.settled(config.output_dir, ends)


def _config_and_run_id(targets: list[str]) -> tuple[Path | None, str | None]:
    """``report [RUN_ID] [CONFIG]`` in either order: a TOML file is the config."""
    # a job shipped with the package is named as for `run` ("customer_balances")
    configs = [t for t in targets if t.endswith(".toml") or Path(t).is_file()
               or (not Path(t).exists() and shipped_config(t).exists())]
    run_ids = [t for t in targets if t not in configs]
    if len(configs) > 1 or len(run_ids) > 1:
        raise ConfigError("expected at most one RUN_ID and one CONFIG (a .toml file or the "
                          "name of a shipped job)")
    return (Path(configs[0]) if configs else None), (run_ids[0] if run_ids else None)


def _generate(args: argparse.Namespace) -> int:
    from pipeline.generate_mainframe import generate_input

    options = {"seed": args.seed, "reject_rate": args.reject_rate,
               "duplicate_rate": args.duplicate_rate}
    if Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} is a directory: name the file to write "
                          f"(e.g. {Path(args.out) / 'input.dat'})")
    try:
        made = generate_input(args.out, args.records, args.format, **options)
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: cannot write it ({exc.strerror})") from None
    except ValueError as exc:
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
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {pipeline.__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    common = [_logging_options()]

    run = sub.add_parser("run", parents=common, help="run a batch job and reconcile it")
    run.add_argument("config", nargs="?", type=Path,
                     help="job config (TOML) or the name of a shipped job; default: the "
                          "daily-transactions job")
    run.add_argument("--input", type=Path, help="input file (overrides input.path)")
    run.add_argument("--resume", metavar="RUN_ID",
                     help="finish RUN_ID from its staging rows (its load completed, it failed "
                          "or was interrupted later): checks, MERGE, audit; no input file")
    _db_option(run)
    run.add_argument("--processors", type=int, help="processor worker processes")
    run.add_argument("--writers", type=int, help="writer worker processes")
    run.add_argument("--batch-size", type=int, help="records per batch")
    run.add_argument("--rerun", action="store_true",
                     help="load a file a succeeded run of the job already loaded (same "
                          "SHA-256); recorded in BATCH_RUN.RERUN")
    run.add_argument("--allow-older", action="store_true",
                     help="load a file whose business date is earlier than the latest a "
                          "succeeded run loaded; recorded in BATCH_RUN.ALLOW_OLDER")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (terminal) or progress log lines (otherwise)")
    run.add_argument("--prometheus-textfile", type=Path, metavar="PATH",
                     help="write the run's metrics here for node_exporter's textfile "
                          "collector (overrides output.prometheus_textfile)")
    run.set_defaults(command=_run_to_the_end)

    validate = sub.add_parser("validate", parents=common,
                              help="parse a whole input and check its trailer; no database")
    validate.add_argument("config", nargs="?", type=Path,
                          help="job config (TOML) or the name of a shipped job; default: "
                               "the daily-transactions job")
    validate.add_argument("--input", type=Path, help="input file (overrides input.path)")
    validate.set_defaults(command=_validate)

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

    explain = sub.add_parser("explain", parents=common,
                             help="name the records (source lines, keys) behind a run's "
                                  "failed checks")
    explain.add_argument("targets", nargs="*", metavar="RUN_ID|CONFIG",
                         help="the run (default: the latest) and/or the job config (default: "
                              "the shipped job's)")
    _db_option(explain)
    explain.add_argument("--limit", type=int, default=20,
                         help="records shown per kind of difference (default 20)")
    explain.add_argument("--csv", type=Path, metavar="PATH",
                         help="write every record behind the differences to PATH")
    explain.set_defaults(command=_explain)

    runs = sub.add_parser("runs", parents=common, help="list recent runs")
    runs.add_argument("config", nargs="?", type=Path,
                      help="job config whose database to read (default: the shipped job's)")
    _db_option(runs)
    runs.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    runs.add_argument("--job", metavar="NAME",
                      help="only this job's runs (default: the CONFIG's job if one is given, "
                           "else every job's)")
    runs.add_argument("--json", action="store_true", help="JSON instead of a table")
    runs.set_defaults(command=_runs)

    history = sub.add_parser("history", parents=common,
                             help="a job's runs night after night, marked where a figure "
                                  "is outside the job's usual band")
    history.add_argument("config", nargs="?", type=Path,
                         help="job config (TOML) or the name of a shipped job, whose "
                              "database and band to use (default: the shipped job)")
    _db_option(history)
    history.add_argument("--job", metavar="NAME",
                         help="the job whose runs to show (default: the CONFIG's)")
    history.add_argument("--nights", type=int, default=30,
                         help="how many of the job's latest runs (default 30)")
    shape = history.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="JSON, for monitoring")
    shape.add_argument("--html", type=Path, metavar="PATH",
                       help="write a self-contained HTML page with plots to PATH")
    history.set_defaults(command=_history)

    gen = sub.add_parser("generate", parents=common, help="write a valid sample input file")
    gen.add_argument("--records", type=int, required=True,
                     help="detail records to write (header and trailer come on top)")
    gen.add_argument("--out", type=Path, required=True, help="the file to write")
    gen.add_argument("--seed", type=int, default=0,
                     help="random seed: the same seed writes the same file (default 0)")
    gen.add_argument("--reject-rate", type=float, default=0.0,
                     help="share of detail records a run must reject, 0-1 (default 0)")
    gen.add_argument("--duplicate-rate", type=float, default=0.0,
                     help="share of detail records repeating an earlier key, 0-1 (default 0)")
    gen.add_argument("--format", choices=("fixed", "ebcdic-fb", "ebcdic-vb"), default="fixed",
                     help="fixed: the text example job's input; ebcdic-fb/ebcdic-vb: the "
                          "daily_transactions_ebcdic job's (cp037, COMP-3, FB or VB)")
    gen.set_defaults(command=_generate)
    return parser


def exit_process(code: int) -> NoReturn:
    """End this process with ``code``. What the run left in memory is frozen first: the
    interpreter's last garbage collection would walk all of it (about 0.1 s after a night)
    only to free memory the process is giving back anyway. atexit handlers still run;
    the run has closed its files, connections and shared memory itself."""
    gc.freeze()
    sys.exit(code)


def console() -> NoReturn:
    """The process's own entry: the ``pipeline`` console script and ``python -m pipeline``."""
    exit_process(main(exiting=True))


if __name__ == "__main__":
    console()
