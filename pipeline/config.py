"""The job configuration (TOML) and its validation.

Every error names the key and what was expected; unknown keys are refused, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.db.audit_tables import NAMES as AUDIT_TABLES
from pipeline.errors import ConfigError
from pipeline.inputs import FORMATS, InputFormat, format_class, input_keys
from pipeline.inputs.text_layout import MAX_AMOUNT_DIGITS
from pipeline.layouts.fields import Charset, Field, FieldType, Layout
from pipeline.settings import ABSENT, IDENTIFIER, get, identifier, refuse_unknown, section
from recon.checks import CHECK_ORDER
from recon.values import HashTotal, RejectLimit, TrailerTotals, VolumeRule


@dataclass(frozen=True)
class JobConfig:
    name: str
    input_format: InputFormat  # input.format: how the file is planned and read (pipeline.inputs)
    input_path: Path | None
    output_dir: Path
    database_url: str
    processors: int
    writers: int | None  # None: the database's default (its profile, pipeline.db.backends)
    batch_size: int | None
    heartbeat_timeout: float
    staging_table: str
    final_table: str
    key_columns: tuple[str, ...]  # FINAL's primary key, in order: one column or several
    amount: str
    trailer_count: str
    trailer_amount: str
    header: Layout
    detail: Layout
    trailer: Layout
    keep_staging_runs: int = 3  # the job's latest runs whose staging rows are kept
    # node_exporter textfile-collector file written at the end of each run (None: none)
    prometheus_textfile: Path | None = None
    # seconds the parent waits for a lock held by another session, and lets one statement
    # run, before the run ends with exit 3 (pipeline.db.engine.Timeouts); 0 = no limit
    lock_timeout: float = 60.0
    statement_timeout: float = 21600.0
    # seconds a failed run keeps trying to record its end while the database is away (a
    # restart, an outage) before it journals it for the next run (pipeline.audit.journal)
    retry_window: float = 30.0
    # the most rejects a night may have (recon.checks.reject_limit_check): a share of the
    # records read and/or a number of records; None: no such bound
    max_reject_rate: Decimal | None = RejectLimit.max_rate
    max_rejects: int | None = None
    # the header field holding the business date (control.business_date): the job-instance
    # rule that refuses an older file (pipeline.identity); None: the job has no date rule
    business_date: str | None = None
    # tonight's records read against the job's history (control.volume_*)
    volume: VolumeRule = VolumeRule()
    # the trailer's hash total (control.trailer_hash_total), its value not yet read;
    # None: the trailer carries none
    hash_total: HashTotal | None = None
    # [[details]]: several detail record types, each with its own tables and checks (the
    # fields above are then the first type's); empty: the one detail of [copybook]/[tables]
    details: tuple[DetailType, ...] = ()

    @property
    def code_page(self) -> str:
        """The code page the input is read in (text jobs: ASCII), recorded in BATCH_RUN."""
        return self.input_format.code_page

    @property
    def copybook_sha256(self) -> str | None:
        return self.input_format.copybook_sha256

    @property
    def amount_field(self) -> Field:
        return self.detail.field(self.amount)

    @property
    def reject_limit(self) -> RejectLimit:
        return RejectLimit(self.max_reject_rate, self.max_rejects)

    def with_overrides(self, **changes: Any) -> JobConfig:
        """A copy with the command line's overrides (None means: keep the config's)."""
        config = replace(self, **{k: v for k, v in changes.items() if v is not None})
        _check_workers(config)
        return config


@dataclass(frozen=True)
class DetailType:
    """One detail record type of a ``[[details]]`` job. ``config`` is the job as if this
    were its only detail type (its record, tables, key and amount): the load, the checks
    and the MERGE of a type are those of a single-detail job."""

    type_value: str  # its record_type value
    config: JobConfig
    trailer_count: str | None = None  # the trailer field counting this type's records

    @property
    def label(self) -> str:
        """How its checks are named: ``<final table>:<check>`` (pipeline.chains)."""
        return self.config.final_table


def load_config(path: str | Path) -> JobConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    return parse_config(data, source=path)


def parse_config(data: Mapping[str, Any], source: Path) -> JobConfig:
    refuse_unknown(data, "", {"job", "input", "output", "database", "workers", "tables",
                              "control", "layout", "copybook", "details"})
    if "details" in data:
        return _several_details(data, source)
    job = section(data, "job", {"name", "description"})
    inp = section(data, "input", input_keys())
    out = section(data, "output", {"dir", "prometheus_textfile"})
    db = section(data, "database", {"url", "lock_timeout", "statement_timeout",
                                    "retry_window"})
    workers = section(data, "workers", {"processors", "writers", "batch_size",
                                        "heartbeat_timeout"})
    tables = section(data, "tables", {"staging", "final", "key", "amount",
                                      "keep_staging_runs"})
    control = section(data, "control", {"trailer_count", "trailer_amount",
                                        "max_reject_rate", "max_rejects", "business_date",
                                         "trailer_hash_total", *VOLUME_KEYS})
    section(data, "layout", {"header", "detail", "trailer"})  # read by the text formats

    fmt = get(inp, "input.format", str, "fixed")
    reader = format_class(fmt)
    path = get(inp, "input.path", str, "")
    get(job, "job.description", str, "")  # for people reading the file: checked, not kept
    config = JobConfig(
        name=identifier(job, "job.name"),
        # a config names its input relative to itself, like the sample beside a shipped job
        input_path=source.parent / path if path else None,
        output_dir=Path(get(out, "output.dir", str, "pipeline_work")),
        database_url=get(db, "database.url", str, "sqlite:///pipeline_work/pipeline.db"),
        processors=get(workers, "workers.processors", int, 2),
        writers=get(workers, "workers.writers", int, ABSENT),
        batch_size=get(workers, "workers.batch_size", int, ABSENT),
        heartbeat_timeout=float(get(workers, "workers.heartbeat_timeout", (int, float), 30)),
        staging_table=identifier(tables, "tables.staging"),
        final_table=identifier(tables, "tables.final"),
        key_columns=_key_columns(tables),
        amount=identifier(tables, "tables.amount"),
        keep_staging_runs=get(tables, "tables.keep_staging_runs", int, 3),
        trailer_count=identifier(control, "control.trailer_count"),
        trailer_amount=identifier(control, "control.trailer_amount"),
        **_input(reader.from_config(fmt, data, source)),
        prometheus_textfile=_optional_path(out, "output.prometheus_textfile"),
        lock_timeout=float(get(db, "database.lock_timeout", (int, float), 60)),
        statement_timeout=float(get(db, "database.statement_timeout", (int, float), 21600)),
        retry_window=float(get(db, "database.retry_window", (int, float), 30)),
        **_reject_limit(control),
        business_date=_optional_identifier(control, "control.business_date"),
        volume=_volume_rule(control),
    )
    config = replace(config, hash_total=_hash_total(control, config))
    _check_workers(config)
    _check_roles(config)
    return config


def _input(reader: InputFormat) -> dict[str, Any]:
    """The job's input format and the header, detail and trailer layouts it reads."""
    header, detail, trailer = reader.layouts()
    return {"input_format": reader, "header": header, "detail": detail, "trailer": trailer}


DETAIL_KEYS = {"record", "type", "staging", "final", "key", "amount"}
# RECON_AUDIT.CHECK_NAME is 50 characters: "<final>:" and the longest check name of a type
LONGEST_TYPE_CHECK = max(map(len, CHECK_ORDER))  # a type has every run's checks


def _several_details(data: Mapping[str, Any], source: Path) -> JobConfig:
    """A ``[[details]]`` job: each entry is parsed as the single-detail job it would be
    (same header, trailer and control), then the types are checked against each other."""
    entries = data["details"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError("[[details]]: expected one or more tables (record, type, staging, "
                          "final, key, amount)")
    fmt = data.get("input", {}).get("format")
    if not (isinstance(fmt, str) and fmt in FORMATS and FORMATS[fmt].several_types):
        raise ConfigError("[[details]]: only for input.format fb or vb (a copybook job)")
    book = section(data, "copybook", {"path", "header", "trailer", "record_type",
                                      "header_type", "trailer_type", "dates", "library"})
    if not book.get("record_type"):
        raise ConfigError("copybook.record_type: [[details]] needs the field that tells the "
                          "record types apart")
    tables = section(data, "tables", {"keep_staging_runs"})
    control = dict(data.get("control", {}))
    counts = control.pop("trailer_counts", {})
    if "trailer_hash_total" in control:
        raise ConfigError("control.trailer_hash_total: not with [[details]] (the types "
                          "differ in their fields)")
    types = []
    for i, entry in enumerate(entries):
        where = f"details[{i + 1}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table")
        refuse_unknown(entry, where, DETAIL_KEYS)
        if missing := sorted(DETAIL_KEYS - set(entry)):
            raise ConfigError(f"{where}.{missing[0]}: missing")
        single = {k: v for k, v in data.items() if k != "details"} | {
            "copybook": {**book, "detail": entry["record"], "detail_type": entry["type"]},
            "tables": {**tables, **{k: entry[k] for k in ("staging", "final", "key", "amount")}},
            "control": control}
        try:
            config = parse_config(single, source)
        except ConfigError as exc:
            raise ConfigError(f"{where} ({entry['record']}): {exc}") from None
        types.append(DetailType(entry["type"], config))
    details = _check_types(types, counts)
    first = types[0].config
    reader = first.input_format.with_types([(t.config.input_format, t.config.amount)
                                            for t in details])
    return replace(first, details=details, input_format=reader)


def _check_types(types: list[DetailType], counts: Any) -> tuple[DetailType, ...]:
    """Distinct type values and tables, one record-type field, and control.trailer_counts
    (``{ <type value> = "<trailer field>" }``) naming trailer numbers."""
    values = [t.type_value for t in types]
    if len(set(values)) != len(values):
        raise ConfigError(f"[[details]]: each type value once, got {values}")
    names = [n for t in types for n in (t.config.staging_table, t.config.final_table)]
    if len(set(names)) != len(names):
        raise ConfigError(f"[[details]]: every staging and final table its own, got {names}")
    for t in types:
        if len(t.label) + 1 + LONGEST_TYPE_CHECK > 50:
            raise ConfigError(f"[[details]] final {t.label!r}: at most "
                              f"{49 - LONGEST_TYPE_CHECK} characters (it names the type's "
                              "checks, and RECON_AUDIT.CHECK_NAME holds 50)")
    if not isinstance(counts, Mapping) or set(counts) - set(values):
        raise ConfigError(f"control.trailer_counts: expected {{ <type value> = \"<trailer "
                          f"field>\" }} for the types {values}, got {counts!r}")
    trailer = types[0].config.trailer
    for value, field in counts.items():
        key = f"control.trailer_counts.{value}"
        if not isinstance(field, str) or not IDENTIFIER.fullmatch(field):
            raise ConfigError(f"{key}: expected the name of a trailer field, got {field!r}")
        _expect_field(trailer, field, key, {FieldType.NUMBER})
    return tuple(replace(t, trailer_count=counts.get(t.type_value)) for t in types)


def _reject_limit(control: Mapping[str, Any]) -> dict[str, Any]:
    """``control.max_reject_rate`` (a share of the records read, 0 to 1) and/or
    ``control.max_rejects`` (records); neither set: the contract's 5%. Setting only the
    count drops the default rate, so a job's own number is never silently lowered."""
    rate = get(control, "control.max_reject_rate", (int, float), ABSENT)
    count = get(control, "control.max_rejects", int, ABSENT)
    if rate is None and count is None:
        return {}
    if rate is not None and not (math.isfinite(rate) and 0 <= rate <= 1):
        raise ConfigError("control.max_reject_rate: expected a share of the records read "
                          f"from 0 to 1 (0.05 = 5%), got {rate}")
    if count is not None and count < 0:
        raise ConfigError(f"control.max_rejects: expected 0 or more records, got {count}")
    # the TOML number as written (0.05, not the float nearest to it): the limit is exact
    return {"max_reject_rate": None if rate is None else Decimal(str(rate)),
            "max_rejects": count}


def trailer_totals(config: JobConfig, trailer: Mapping[str, Any]) -> TrailerTotals:
    """What a trailer record's fields (as planned) declare, by the job's control keys."""
    rule = config.hash_total
    return TrailerTotals(trailer[config.trailer_count], trailer[config.trailer_amount],
                         None if rule is None else replace(rule, value=trailer[rule.field]))


def _hash_total(control: Mapping[str, Any], config: JobConfig) -> HashTotal | None:
    """``control.trailer_hash_total = { field = "...", of = "..." }``: the trailer field
    holding the sum of the detail field ``of`` (a whole number, e.g. the account)."""
    key = "control.trailer_hash_total"
    spec = control.get("trailer_hash_total")
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ConfigError(f'{key}: expected {{ field = "<trailer field>", of = "<detail '
                          f'field>" }}, got {spec!r}')
    refuse_unknown(spec, key, {"field", "of"})
    total = _expect_field(config.trailer, identifier(spec, f"{key}.field"), f"{key}.field",
                          {FieldType.NUMBER})
    of = _expect_field(config.detail, identifier(spec, f"{key}.of"), f"{key}.of",
                       {FieldType.DIGITS, FieldType.NUMBER, FieldType.AMOUNT})
    if of.type is FieldType.AMOUNT and of.scale:
        raise ConfigError(f"{key}.of: field {of.name!r} has decimals; a hash total sums a "
                          "whole number (an account, a branch)")
    for fld, what in ((total, "field"), (of, "of")):
        if fld.length > MAX_AMOUNT_DIGITS:
            raise ConfigError(f"{key}.{what}: field {fld.name!r} has {fld.length} digits; "
                              f"at most {MAX_AMOUNT_DIGITS} are summed exactly")
    if not of.stored:
        raise ConfigError(f"{key}.of: field {of.name!r} is not stored, so staging and the "
                          "final table could not be summed")
    return HashTotal(total.name, of.name, total.length)


def _check_workers(config: JobConfig) -> None:
    if not 1 <= config.processors <= 256:
        raise ConfigError(f"workers.processors: expected 1 to 256, got {config.processors}")
    if config.writers is not None and not 1 <= config.writers <= 64:
        raise ConfigError(f"workers.writers: expected 1 to 64, got {config.writers}")
    if config.batch_size is not None and not 1 <= config.batch_size <= 1_000_000:
        raise ConfigError(f"workers.batch_size: expected 1 to 1000000, got {config.batch_size}")
    if not 1 <= config.keep_staging_runs <= 1000:
        raise ConfigError("tables.keep_staging_runs: expected 1 to 1000, got "
                          f"{config.keep_staging_runs}")
    for name in ("lock_timeout", "statement_timeout", "retry_window"):
        seconds = getattr(config, name)
        if not (math.isfinite(seconds) and 0 <= seconds <= 7 * 86400):
            raise ConfigError(f"database.{name}: expected 0 (no limit) to 604800 seconds, "
                              f"got {seconds}")
    if not (math.isfinite(config.heartbeat_timeout) and config.heartbeat_timeout > 0):
        raise ConfigError("workers.heartbeat_timeout: expected a positive number of seconds")


def _check_roles(config: JobConfig) -> None:
    detail, trailer = config.detail, config.trailer
    for name in config.key_columns:
        part = _expect_field(detail, name, "tables.key",
                             {FieldType.TEXT, FieldType.DIGITS, FieldType.DATE})
        # blank text is stored as NULL, which no key column holds: the load would fail
        # at the database instead of rejecting the record with a reason
        if (part.type is FieldType.TEXT and not part.required
                and part.charset is not Charset.UPPER):
            raise ConfigError(f"tables.key: text field {name!r} must be required = true "
                              "(a key is never blank)")
    _expect_field(detail, config.amount, "tables.amount", {FieldType.AMOUNT})
    _expect_field(trailer, config.trailer_count, "control.trailer_count", {FieldType.NUMBER})
    total = _expect_field(trailer, config.trailer_amount, "control.trailer_amount",
                          {FieldType.AMOUNT})
    if total.scale != config.amount_field.scale:
        raise ConfigError("control.trailer_amount: expected the same scale as tables.amount")
    if config.business_date is not None:
        _expect_field(config.header, config.business_date, "control.business_date",
                      {FieldType.DATE})
    reserved = {"run_id", "source_line", "worker_id", "last_run_id", "updated_ts"}
    clash = reserved & {f.name for f in detail.stored_fields}
    if clash:
        raise ConfigError(f"layout.detail: field names {sorted(clash)} are reserved")
    for key, table in (("tables.staging", config.staging_table),
                       ("tables.final", config.final_table)):
        if table.lower() in AUDIT_TABLES:  # the shared ones (pipeline.db.audit_tables)
            raise ConfigError(f"{key}: {table!r} is one of the job's own audit tables "
                              f"({', '.join(sorted(AUDIT_TABLES))}); choose another name")
    if config.staging_table == config.final_table:
        raise ConfigError("tables.staging and tables.final must be different tables")



VOLUME_KEYS = ("volume_history_runs", "volume_band", "volume_min_runs", "volume_action")
VOLUME_ACTIONS = ("warn", "fail")


def _volume_rule(control: Mapping[str, Any]) -> VolumeRule:
    """control.volume_*: how tonight's records read are held against the job's history."""
    default = VolumeRule()
    runs = get(control, "control.volume_history_runs", int, default.history_runs)
    if not 1 <= runs <= 1000:
        raise ConfigError(f"control.volume_history_runs: expected 1 to 1000, got {runs}")
    least = get(control, "control.volume_min_runs", int, min(default.min_runs, runs))
    if not 1 <= least <= runs:
        raise ConfigError(f"control.volume_min_runs: expected 1 to control.volume_history_runs "
                          f"({runs}), got {least}")
    band = float(get(control, "control.volume_band", (int, float), default.band))
    if not (math.isfinite(band) and 0 < band <= 100):
        raise ConfigError(f"control.volume_band: expected a share above 0 (0.5 = +/-50%), "
                          f"got {band}")
    action = get(control, "control.volume_action", str, default.action)
    if action not in VOLUME_ACTIONS:
        raise ConfigError(f'control.volume_action: expected "warn" or "fail", got {action!r}')
    return VolumeRule(runs, band, least, action)


def _optional_identifier(data: Mapping[str, Any], key: str) -> str | None:
    return identifier(data, key) if key.rsplit(".", 1)[-1] in data else None


def _key_columns(tables: Mapping[str, Any]) -> tuple[str, ...]:
    """``key = "txn_id"`` or, for a composite key, ``key = ["account_id", "txn_date"]``."""
    raw = tables.get("key")
    if raw is None:
        raise ConfigError("tables.key: missing")
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        raise ConfigError(f"tables.key: expected a field name or a non-empty list of field "
                          f"names, got {raw!r}")
    columns = tuple(identifier({"key": n}, "tables.key") for n in names)
    if len(set(columns)) != len(columns):
        raise ConfigError(f"tables.key: a field may appear once, got {list(columns)}")
    return columns


def _expect_field(layout: Layout, name: str, key: str, types: set[FieldType]) -> Field:
    try:
        field = layout.field(name)
    except KeyError:
        raise ConfigError(f"{key}: no field {name!r} in the layout of the "
                          f"{layout.record_type!r} records") from None
    if field.type not in types:
        wanted = " or ".join(sorted(types))
        raise ConfigError(f"{key}: field {name!r} must be of type {wanted}")
    return field


def _optional_path(section: Mapping[str, Any], key: str) -> Path | None:
    value = get(section, key, str, "")
    return Path(value) if value else None
