"""Command line: parse arguments, load the config, run, map the outcome to an exit code.

Exit codes (the operators' contract): 0 every check passed and the MERGE committed;
1 a reconciliation check failed; 2 bad usage, configuration or input structure;
3 a runtime failure (a worker died or hung, the database failed, the run was interrupted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import JobConfig, load_config
from pipeline.errors import PipelineError
from pipeline.jobs import shipped_config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.command(args))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from pipeline.job import run_job
    from pipeline.summary import format_summary

    config = _config(args)
    outcome = run_job(config)
    text = format_summary(outcome, config.amount_field.scale)
    print(text)
    if outcome.run_dir.is_dir():
        (outcome.run_dir / "summary.txt").write_text(text + "\n", encoding="utf-8")
    return outcome.exit_code


def _config(args: argparse.Namespace) -> JobConfig:
    config = load_config(args.config or shipped_config())
    return config.with_overrides(input_path=args.input, database_url=args.db,
                                 processors=args.processors, writers=args.writers,
                                 batch_size=args.batch_size)


def _generate(args: argparse.Namespace) -> int:
    from pipeline.generate import generate_file

    try:
        made = generate_file(args.out, args.records, seed=args.seed,
                             reject_rate=args.reject_rate, duplicate_rate=args.duplicate_rate)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {made.records:,} detail records to {made.path} "
          f"({made.rejects:,} rejectable, {made.duplicates:,} duplicate keys)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a batch job and reconcile it")
    run.add_argument("config", nargs="?", type=Path,
                     help="job config (TOML); default: the shipped daily-transactions job")
    run.add_argument("--input", type=Path, help="input file (overrides input.path)")
    run.add_argument("--db", help="SQLAlchemy database URL (overrides database.url)")
    run.add_argument("--processors", type=int, help="processor worker processes")
    run.add_argument("--writers", type=int, help="writer worker processes")
    run.add_argument("--batch-size", type=int, help="records per batch")
    run.set_defaults(command=_run)

    gen = sub.add_parser("generate", help="write a valid sample input file")
    gen.add_argument("--records", type=int, required=True)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--reject-rate", type=float, default=0.0)
    gen.add_argument("--duplicate-rate", type=float, default=0.0)
    gen.set_defaults(command=_generate)
    return parser


if __name__ == "__main__":
    sys.exit(main())
