"""The job configuration (TOML) and its validation.

Every error names the key and what was expected; unknown keys are refused, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from pipeline.layouts.csv import CsvLayout
from pipeline.layouts.fields import Charset, Field, FieldType, Layout
from recon.checks import CHECK_ORDER
from recon.values import HashTotal, RejectLimit, TrailerTotals, VolumeRule

if TYPE_CHECKING:
    from pipeline.layouts.mainframe_input import MainframeInput

# Plain, unquoted identifiers that every database accepts as typed, within Oracle's
# pre-12.2 limit of 30 bytes. Anything else (quotes, spaces, semicolons) is refused here,
# before any name reaches SQL.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
MAX_AMOUNT_DIGITS = 18  # 10**18 - 1 still fits int64 after parsing


@dataclass(frozen=True)
class JobConfig:
    name: str
    input_format: str
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
    mainframe: MainframeInput | None = None  # input.format fb/vb: copybook and code page
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
        return self.mainframe.detail.code_page.name if self.mainframe else "ascii"

    @property
    def copybook_sha256(self) -> str | None:
        return self.mainframe.copybook_sha256 if self.mainframe else None

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
    _refuse_unknown(data, "", {"job", "input", "output", "database", "workers", "tables",
                               "control", "layout", "copybook", "details"})
    if "details" in data:
        return _several_details(data, source)
    job = _section(data, "job", {"name", "description"})
    inp = _section(data, "input", {"format", "record_length", "path", "delimiter", "encoding",
                                   "blocked", *FRAMING_KEYS})
    out = _section(data, "output", {"dir", "prometheus_textfile"})
    db = _section(data, "database", {"url", "lock_timeout", "statement_timeout",
                                     "retry_window"})
    workers = _section(data, "workers", {"processors", "writers", "batch_size",
                                         "heartbeat_timeout"})
    tables = _section(data, "tables", {"staging", "final", "key", "amount",
                                       "keep_staging_runs"})
    control = _section(data, "control", {"trailer_count", "trailer_amount",
                                         "max_reject_rate", "max_rejects", "business_date",
                                         "trailer_hash_total", *VOLUME_KEYS})
    layout = _section(data, "layout", {"header", "detail", "trailer"})

    fmt = _get(inp, "input.format", str, "fixed")
    if fmt not in ("fixed", "csv", "fb", "vb"):
        raise ConfigError(f'input.format: expected "fixed", "csv", "fb" or "vb", got {fmt!r}')
    length = _get(inp, "input.record_length", int, 0 if fmt in ("csv", "vb") else None)
    path = _get(inp, "input.path", str, "")
    delimiter = _delimiter(inp)  # kept by the CSV layouts, the only ones that split on it
    _get(job, "job.description", str, "")  # for people reading the file: checked, not kept
    config = JobConfig(
        name=_identifier(job, "job.name"),
        input_format=fmt,
        # a config names its input relative to itself, like the sample beside a shipped job
        input_path=source.parent / path if path else None,
        output_dir=Path(_get(out, "output.dir", str, "pipeline_work")),
        database_url=_get(db, "database.url", str, "sqlite:///pipeline_work/pipeline.db"),
        processors=_get(workers, "workers.processors", int, 2),
        writers=_get(workers, "workers.writers", int, _ABSENT),
        batch_size=_get(workers, "workers.batch_size", int, _ABSENT),
        heartbeat_timeout=float(_get(workers, "workers.heartbeat_timeout", (int, float), 30)),
        staging_table=_identifier(tables, "tables.staging"),
        final_table=_identifier(tables, "tables.final"),
        key_columns=_key_columns(tables),
        amount=_identifier(tables, "tables.amount"),
        keep_staging_runs=_get(tables, "tables.keep_staging_runs", int, 3),
        trailer_count=_identifier(control, "control.trailer_count"),
        trailer_amount=_identifier(control, "control.trailer_amount"),
        **_layouts(data, layout, length, fmt, delimiter, source),
        prometheus_textfile=_optional_path(out, "output.prometheus_textfile"),
        lock_timeout=float(_get(db, "database.lock_timeout", (int, float), 60)),
        statement_timeout=float(_get(db, "database.statement_timeout", (int, float), 21600)),
        retry_window=float(_get(db, "database.retry_window", (int, float), 30)),
        **_reject_limit(control),
        business_date=_optional_identifier(control, "control.business_date"),
        volume=_volume_rule(control),
    )
    config = replace(config, hash_total=_hash_total(control, config))
    _check_workers(config)
    _check_roles(config)
    return config


def _layouts(data: Mapping[str, Any], layout: Mapping[str, Any], length: int, fmt: str,
             delimiter: str, source: Path) -> dict[str, Any]:
    """header, detail, trailer (and the mainframe decoders) of the job."""
    if fmt not in ("fb", "vb"):
        if "copybook" in data or {"encoding", "blocked", *FRAMING_KEYS} & set(
                data.get("input", {})):
            raise ConfigError(f"[copybook], input.encoding, input.blocked and input."
                              f"{', input.'.join(FRAMING_KEYS)}: only for input.format fb or vb")
        return {role: _layout(layout, role, length, fmt, delimiter)
                for role in ("header", "detail", "trailer")}
    from pipeline.layouts.copybook import MAX_RECORD_BYTES
    from pipeline.layouts.mainframe_input import Roles, build_mainframe

    if layout:
        raise ConfigError("[layout]: a fb/vb job takes its layout from [copybook]")
    book = _section(data, "copybook", {"path", "header", "detail", "trailer", "record_type",
                                       "header_type", "detail_type", "trailer_type", "dates",
                                       "library"})
    inp, tables, control = data.get("input", {}), data.get("tables", {}), data.get("control", {})
    blocked = _get(inp, "input.blocked", bool, False)
    if fmt == "fb" and (length < 1 or blocked):
        raise ConfigError("input.record_length: a fb input needs a positive record length "
                          "(and no blocked = true)")
    if length > MAX_RECORD_BYTES:
        raise ConfigError(f"input.record_length: {length} is more than a record holds "
                          f"({MAX_RECORD_BYTES})")
    key = tables.get("key", "")
    roles = Roles(frozenset(key if isinstance(key, list) else [key]), str(tables.get("amount", "")),
                  str(control.get("trailer_count", "")), str(control.get("trailer_amount", "")))
    mf, layouts = build_mainframe(book, _record_format(inp, fmt, length, blocked),
                                  _get(inp, "input.encoding", str, "cp037"), source, roles)
    return {**layouts, "mainframe": mf}


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
    if data.get("input", {}).get("format") not in ("fb", "vb"):
        raise ConfigError("[[details]]: only for input.format fb or vb (a copybook job)")
    book = _section(data, "copybook", {"path", "header", "trailer", "record_type",
                                       "header_type", "trailer_type", "dates", "library"})
    if not book.get("record_type"):
        raise ConfigError("copybook.record_type: [[details]] needs the field that tells the "
                          "record types apart")
    tables = _section(data, "tables", {"keep_staging_runs"})
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
        _refuse_unknown(entry, where, DETAIL_KEYS)
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
    return replace(types[0].config, details=_check_types(types, counts))


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
    where = {(it.offset, it.size) for t in types
             if t.config.mainframe and (it := t.config.mainframe.detail.type_item)}
    if len(where) != 1:
        raise ConfigError("copybook.record_type: must be at the same place in every detail "
                          "record")
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


FRAMING_KEYS = ("file_start_offset", "file_end_offset", "rdw_big_endian", "rdw_adjustment")


def _record_format(inp: Mapping[str, Any], fmt: str, length: int, blocked: bool) -> Any:
    """The FB/VB framing: record length, blocks, bytes around the records, the RDW's shape."""
    from pipeline.layouts.copybook import MAX_RECORD_BYTES
    from pipeline.layouts.recfm import RecordFormat

    offsets = [_get(inp, f"input.{key}", int, 0) for key in FRAMING_KEYS[:2]]
    if any(not 0 <= n <= 1 << 40 for n in offsets):
        raise ConfigError("input.file_start_offset, input.file_end_offset: a number of bytes "
                          "(0 or more)")
    big_endian = _get(inp, "input.rdw_big_endian", bool, True)
    adjustment = _get(inp, "input.rdw_adjustment", int, 0)
    if fmt == "fb" and ("rdw_big_endian" in inp or "rdw_adjustment" in inp):
        raise ConfigError("input.rdw_big_endian, input.rdw_adjustment: only for input.format "
                          "vb (FB records have no RDW)")
    if not -MAX_RECORD_BYTES <= adjustment <= MAX_RECORD_BYTES:
        raise ConfigError(f"input.rdw_adjustment: {adjustment} is no RDW adjustment")
    return RecordFormat(fmt, length or 32756, blocked, offsets[0], offsets[1], big_endian,
                        adjustment)


def _reject_limit(control: Mapping[str, Any]) -> dict[str, Any]:
    """``control.max_reject_rate`` (a share of the records read, 0 to 1) and/or
    ``control.max_rejects`` (records); neither set: the contract's 5%. Setting only the
    count drops the default rate, so a job's own number is never silently lowered."""
    rate = _get(control, "control.max_reject_rate", (int, float), _ABSENT)
    count = _get(control, "control.max_rejects", int, _ABSENT)
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
    _refuse_unknown(spec, key, {"field", "of"})
    total = _expect_field(config.trailer, _identifier(spec, f"{key}.field"), f"{key}.field",
                          {FieldType.NUMBER})
    of = _expect_field(config.detail, _identifier(spec, f"{key}.of"), f"{key}.of",
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
        if table.lower() in AUDIT_TABLES:
            raise ConfigError(f"{key}: {table!r} is one of the job's own audit tables "
                              f"({', '.join(sorted(AUDIT_TABLES))}); choose another name")
    if config.staging_table == config.final_table:
        raise ConfigError("tables.staging and tables.final must be different tables")


# the shared audit tables (pipeline.db.audit_tables): never a job's staging or FINAL
AUDIT_TABLES = frozenset({"batch_run", "recon_audit", "recon_worker_audit", "job_lock"})


VOLUME_KEYS = ("volume_history_runs", "volume_band", "volume_min_runs", "volume_action")
VOLUME_ACTIONS = ("warn", "fail")


def _volume_rule(control: Mapping[str, Any]) -> VolumeRule:
    """control.volume_*: how tonight's records read are held against the job's history."""
    default = VolumeRule()
    runs = _get(control, "control.volume_history_runs", int, default.history_runs)
    if not 1 <= runs <= 1000:
        raise ConfigError(f"control.volume_history_runs: expected 1 to 1000, got {runs}")
    least = _get(control, "control.volume_min_runs", int, min(default.min_runs, runs))
    if not 1 <= least <= runs:
        raise ConfigError(f"control.volume_min_runs: expected 1 to control.volume_history_runs "
                          f"({runs}), got {least}")
    band = float(_get(control, "control.volume_band", (int, float), default.band))
    if not (math.isfinite(band) and 0 < band <= 100):
        raise ConfigError(f"control.volume_band: expected a share above 0 (0.5 = +/-50%), "
                          f"got {band}")
    action = _get(control, "control.volume_action", str, default.action)
    if action not in VOLUME_ACTIONS:
        raise ConfigError(f'control.volume_action: expected "warn" or "fail", got {action!r}')
    return VolumeRule(runs, band, least, action)


def _optional_identifier(data: Mapping[str, Any], key: str) -> str | None:
    return _identifier(data, key) if key.rsplit(".", 1)[-1] in data else None


def _key_columns(tables: Mapping[str, Any]) -> tuple[str, ...]:
    """``key = "txn_id"`` or, for a composite key, ``key = ["account_id", "txn_date"]``."""
    raw = tables.get("key")
    if raw is None:
        raise ConfigError("tables.key: missing")
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names:
        raise ConfigError(f"tables.key: expected a field name or a non-empty list of field "
                          f"names, got {raw!r}")
    columns = tuple(_identifier({"key": n}, "tables.key") for n in names)
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
    value = _get(section, key, str, "")
    return Path(value) if value else None


def _delimiter(inp: Mapping[str, Any]) -> str:
    delimiter = _get(inp, "input.delimiter", str, ",")
    if len(delimiter) != 1 or delimiter in '"\r\n' or not delimiter.isascii():
        raise ConfigError(f"input.delimiter: expected one ASCII character other than a quote "
                          f"or a line end, got {delimiter!r}")
    return delimiter


def _layout(section: Mapping[str, Any], name: str, record_length: int, fmt: str,
            delimiter: str = ",") -> Layout:
    raw = section.get(name)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"layout.{name}: expected a list of fields")
    fields: list[Field] = []
    position = 1
    for i, item in enumerate(raw):
        key = _field_key(name, i, item)
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: expected a table of field settings")
        field = _field(item, key, position if fmt == "csv" else None)
        if field.start != position:
            raise ConfigError(f"{key}: field {field.name!r} starts at column {field.start}, "
                              f"expected {position} (fields must cover the record in order)")
        position = field.end + 1
        fields.append(field)
    if fmt == "fixed" and position - 1 != record_length:
        raise ConfigError(f"layout.{name}: fields cover {position - 1} columns, "
                          f"input.record_length is {record_length}")
    layout = Layout(record_type=fields[0].value, length=position - 1, fields=tuple(fields))
    if fmt == "csv":
        _check_csv_fields(fields, name)
        # the layout carries its framing, so whoever reads records with it can split them
        layout = CsvLayout(layout.record_type, layout.length, layout.fields, delimiter)
    _check_layout(layout, name)
    return layout


def _field_key(layout: str, index: int, item: Any) -> str:
    """How a message names a field: by its name, which the operator finds in the TOML, or
    by its 1-based position when the name itself is missing or not an identifier."""
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and IDENTIFIER.fullmatch(name):
        return f"layout.{layout}.{name}"
    return f"layout.{layout} field {index + 1}"


def _field(item: Mapping[str, Any], key: str, csv_start: int | None) -> Field:
    allowed = {"name", "start", "length", "type", "value", "charset", "required", "scale", "sign"}
    _refuse_unknown(item, key, allowed)
    type_name = _get(item, f"{key}.type", str)
    try:
        ftype = FieldType(type_name)
    except ValueError:
        raise ConfigError(f"{key}.type: expected one of {[t.value for t in FieldType]}, "
                          f"got {type_name!r}") from None
    charset = _get(item, f"{key}.charset", str, "printable")
    try:
        chars = Charset(charset)
    except ValueError:
        raise ConfigError(f"{key}.charset: expected one of {[c.value for c in Charset]}, "
                          f"got {charset!r}") from None
    start = csv_start if csv_start is not None else _get(item, f"{key}.start", int)
    field = Field(
        name=_identifier(item, f"{key}.name"),
        start=start,
        length=_get(item, f"{key}.length", int),
        type=ftype,
        value=_get(item, f"{key}.value", str, ""),
        charset=chars,
        required=_get(item, f"{key}.required", bool, False),
        scale=_get(item, f"{key}.scale", int, 0),
        sign=_get(item, f"{key}.sign", str, ""),
    )
    _check_field(field, key)
    return field


def _check_field(field: Field, key: str) -> None:
    if field.length < 1:
        raise ConfigError(f"{key}.length: expected a positive length")
    if field.type is FieldType.LITERAL and (len(field.value) != field.length
                                            or not field.value.isascii()):
        raise ConfigError(f"{key}.value: expected {field.length} ASCII characters")
    if field.type is FieldType.DATE and field.length != 8:
        raise ConfigError(f"{key}.length: a date is YYYYMMDD, 8 columns")
    if field.type is FieldType.SIGN and field.length != 1:
        raise ConfigError(f"{key}.length: a sign is 1 column")
    if field.type in (FieldType.AMOUNT, FieldType.NUMBER) and field.length > MAX_AMOUNT_DIGITS:
        raise ConfigError(f"{key}.length: at most {MAX_AMOUNT_DIGITS} digits fit exactly")
    if field.type is FieldType.AMOUNT and not 0 <= field.scale < field.length:
        raise ConfigError(f"{key}.scale: expected 0 to {field.length - 1}")


def _check_layout(layout: Layout, name: str) -> None:
    if layout.fields[0].type is not FieldType.LITERAL:
        raise ConfigError(f"layout.{name} field 1: the first field must be the record type "
                          "literal")
    names = [f.name for f in layout.fields if f.type is not FieldType.FILLER]
    if len(names) != len(set(names)):
        raise ConfigError(f"layout.{name}: field names must be unique")
    for f in layout.fields:
        if f.type is FieldType.AMOUNT and f.sign:
            sign = next((s for s in layout.fields if s.name == f.sign), None)
            if sign is None or sign.type is not FieldType.SIGN:
                raise ConfigError(f"layout.{name}: amount {f.name!r} names sign {f.sign!r}, "
                                  "which is not a sign field of the layout")


def _check_csv_fields(fields: list[Field], name: str) -> None:
    for i, f in enumerate(fields):
        if f.type is FieldType.SIGN or (f.type is FieldType.AMOUNT and f.sign):
            raise ConfigError(f"{_field_key(name, i, {'name': f.name})}: a csv amount carries "
                              'its own sign (e.g. "-1234.56"): no sign field, no amount sign key')


def _section(data: Mapping[str, Any], name: str, allowed: set[str]) -> Mapping[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"[{name}]: expected a table")
    _refuse_unknown(section, name, allowed)
    return section


def _refuse_unknown(data: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; expected one of {sorted(allowed)}")


_MISSING = object()
_ABSENT = object()  # an optional key without a default: None when absent


def _get(data: Mapping[str, Any], key: str, kind: Any, default: Any = _MISSING) -> Any:
    value = data.get(key.rsplit(".", 1)[-1], _MISSING)
    if value is _MISSING:
        if default is _MISSING or default is None:
            raise ConfigError(f"{key}: missing")
        return None if default is _ABSENT else default
    # bool is an int in Python; refuse it where a count is wanted
    wants_bool = kind is bool or (isinstance(kind, tuple) and bool in kind)
    if not isinstance(value, kind) or (isinstance(value, bool) and not wants_bool):
        raise ConfigError(f"{key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _identifier(data: Mapping[str, Any], key: str) -> str:
    name = _get(data, key, str)
    if not IDENTIFIER.fullmatch(name):
        raise ConfigError(f"{key}: {name!r} is not a plain identifier "
                          "(lower-case letter, then letters, digits or _, at most 30)")
    return name


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return {str: "a string", int: "an integer", bool: "true or false"}.get(kind, kind.__name__)
