"""Job configuration: every mistake is a ConfigError that names the key; the CLI says it in
one line on stderr and exits 2."""

from __future__ import annotations

import copy
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError
from pipeline.jobs import shipped_config
from tests.conftest import run_cli, write_job

pytestmark = pytest.mark.timeout(60)

SHIPPED_TEXT = shipped_config().read_text(encoding="utf-8")
SHIPPED = tomllib.loads(SHIPPED_TEXT)


def detail_field(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in data["layout"]["detail"] if f["name"] == name)


def edited(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(SHIPPED)
    edit(data)
    return data


def refused(data: dict[str, Any], *names: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source=Path("job.toml"))
    message = str(info.value)
    for name in names:
        assert name in message, message
    assert "\n" not in message
    return message


def test_the_shipped_config_is_valid() -> None:
    config = load_config(shipped_config())
    assert (config.detail.length, config.header.length, config.trailer.length) == (100, 100, 100)
    assert config.amount == "amount" and config.key_columns == ("txn_id",)
    assert (config.staging_table, config.final_table) == ("stg_transactions", "transactions")


@pytest.mark.parametrize(("key", "columns"), [
    ("txn_id", ("txn_id",)),
    (["txn_id"], ("txn_id",)),
    (["account_id", "txn_date", "txn_id"], ("account_id", "txn_date", "txn_id")),
    (["txn_date", "account_id"], ("txn_date", "account_id")),
])
def test_the_key_is_one_field_or_an_ordered_list(key: object, columns: tuple[str, ...]) -> None:
    config = parse_config(edited(_set("tables", "key", key)), source=Path("job.toml"))
    assert config.key_columns == columns


def _set(section: str, key: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda d: d.setdefault(section, {}).__setitem__(key, value)


def _set_field(name: str, key: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda d: detail_field(d, name).__setitem__(key, value)


def _drop_field(name: str) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["layout"]["detail"].remove(detail_field(d, name))


BAD = [
    # unknown keys: a typo never falls back to a default
    ("unknown top-level key", lambda d: d.__setitem__("wrokers", {}), ["wrokers"]),
    ("unknown section key", _set("workers", "procesors", 4), ["workers.procesors"]),
    ("unknown field key", _set_field("currency", "colour", "red"),
     ["layout.detail.currency.colour"]),
    ("section is not a table", lambda d: d.__setitem__("job", "daily"), ["[job]"]),
    # wrong types
    ("string for processors", _set("workers", "processors", "4"), ["workers.processors"]),
    ("bool for processors", _set("workers", "processors", True), ["workers.processors"]),
    ("float for processors", _set("workers", "processors", 2.5), ["workers.processors"]),
    ("bool for record_length", _set("input", "record_length", True), ["input.record_length"]),
    ("bool for batch_size", _set("workers", "batch_size", False), ["workers.batch_size"]),
    ("string for a field length", _set_field("amount", "length", "13"),
     ["layout.detail.amount.length"]),
    ("string for required", _set_field("txn_id", "required", "yes"),
     ["layout.detail.txn_id.required"]),
    ("string for heartbeat_timeout", _set("workers", "heartbeat_timeout", "30"),
     ["workers.heartbeat_timeout"]),
    ("unknown field type", _set_field("amount", "type", "money"), ["layout.detail.amount.type"]),
    ("unknown charset", _set_field("currency", "charset", "latin1"),
     ["layout.detail.currency.charset"]),
    ("unknown input format", _set("input", "format", "vsam"), ["input.format"]),
    ("missing record_length", lambda d: d["input"].pop("record_length"),
     ["input.record_length"]),
    ("missing tables.key", lambda d: d["tables"].pop("key"), ["tables.key"]),
    # ranges
    ("processors 0", _set("workers", "processors", 0), ["workers.processors"]),
    ("processors 257", _set("workers", "processors", 257), ["workers.processors"]),
    ("writers 65", _set("workers", "writers", 65), ["workers.writers"]),
    ("negative batch_size", _set("workers", "batch_size", -1), ["workers.batch_size"]),
    ("heartbeat 0", _set("workers", "heartbeat_timeout", 0), ["workers.heartbeat_timeout"]),
    # identifiers reach SQL: nothing but plain lower-case names
    ("table name with a quote", _set("tables", "final", 'transactions"; DROP TABLE x; --'),
     ["tables.final"]),
    ("table name with a semicolon", _set("tables", "staging", "stg;drop"),
     ["tables.staging"]),
    ("table name with a space", _set("tables", "final", "my transactions"), ["tables.final"]),
    ("table name with a single quote", _set("tables", "final", "o'brien"), ["tables.final"]),
    ("table name of 31 characters", _set("tables", "final", "t" * 31), ["tables.final"]),
    ("upper-case table name", _set("tables", "final", "Transactions"), ["tables.final"]),
    ("empty table name", _set("tables", "final", ""), ["tables.final"]),
    ("table name starting with a digit", _set("tables", "final", "1tx"), ["tables.final"]),
    ("field name with a quote", _set_field("description", "name", 'descr"iption'),
     ["layout.detail field 8.name"]),
    ("job name with a dash", _set("job", "name", "daily-transactions"), ["job.name"]),
    ("staging is final", _set("tables", "staging", "transactions"),
     ["tables.staging", "tables.final"]),
    # the layout must cover the record exactly, in order, without overlaps
    ("fields do not cover the record", _drop_field("filler"),
     ["layout.detail", "92", "100"]),
    ("field beyond the record", _set_field("filler", "length", 9), ["layout.detail", "101"]),
    ("overlapping fields", _set_field("txn_date", "start", 27), ["layout.detail.txn_date", "27"]),
    ("gap between fields", _set_field("txn_date", "start", 29), ["layout.detail.txn_date", "29"]),
    ("record_length disagrees", _set("input", "record_length", 120),
     ["layout.header", "120"]),
    ("zero length field", _set_field("sign", "length", 0), ["layout.detail.sign.length"]),
    ("date of 6 columns", _set_field("txn_date", "length", 6), ["layout.detail.txn_date.length"]),
    ("amount of 19 digits", _set_field("amount", "length", 19), ["layout.detail.amount.length"]),
    ("scale not below length", _set_field("amount", "scale", 13), ["layout.detail.amount.scale"]),
    ("literal of the wrong length", _set_field("record_type", "value", "DD"),
     ["layout.detail.record_type.value"]),
    ("first field is not the record type", _set_field("record_type", "type", "text"),
     ["layout.detail field 1"]),
    ("duplicate field names", _set_field("description", "name", "currency"),
     ["layout.detail"]),
    ("reserved field name", _set_field("description", "name", "run_id"),
     ["layout.detail", "run_id"]),
    # roles
    ("amount names a missing sign field", _set_field("amount", "sign", "nosign"),
     ["layout.detail", "nosign"]),
    ("amount's sign is not a sign field", _set_field("amount", "sign", "currency"),
     ["layout.detail", "currency"]),
    ("amount without its sign field",
     lambda d: (_set_field("sign", "type", "filler")(d)), ["layout.detail", "'sign'"]),
    ("key not in the layout", _set("tables", "key", "nokey"), ["tables.key", "nokey"]),
    ("amount not in the layout", _set("tables", "amount", "amt"), ["tables.amount", "amt"]),
    ("amount is not an amount", _set("tables", "amount", "currency"),
     ["tables.amount", "currency"]),
    ("key is an amount", _set("tables", "key", "amount"), ["tables.key"]),
    ("composite key is empty", _set("tables", "key", []), ["tables.key", "non-empty list"]),
    ("key is a number", _set("tables", "key", 7), ["tables.key", "7"]),
    ("composite key names a field twice", _set("tables", "key", ["txn_id", "txn_id"]),
     ["tables.key", "once"]),
    ("composite key part not a name", _set("tables", "key", ["txn_id", 3]), ["tables.key"]),
    ("composite key part not an identifier", _set("tables", "key", ["txn_id", "Txn Date"]),
     ["tables.key", "Txn Date"]),
    ("composite key part not in the layout", _set("tables", "key", ["account_id", "seq_no"]),
     ["tables.key", "seq_no"]),
    ("key text may be blank", _set_field("txn_id", "required", False),
     ["tables.key", "txn_id", "required"]),
    ("composite key text part may be blank", _set("tables", "key", ["account_id", "description"]),
     ["tables.key", "description", "required"]),
    ("composite key part is an amount", _set("tables", "key", ["account_id", "amount"]),
     ["tables.key", "amount"]),
    ("trailer count not a number field", _set("control", "trailer_count", "sign"),
     ["control.trailer_count"]),
    ("trailer amount missing", _set("control", "trailer_amount", "total"),
     ["control.trailer_amount", "total"]),
    ("trailer scale differs", lambda d: d["layout"]["trailer"][3].__setitem__("scale", 3),
     ["control.trailer_amount"]),
    ("final is an audit table", _set("tables", "final", "recon_evidence"),
     ["tables.final", "recon_evidence", "audit tables"]),
    ("staging is an audit table", _set("tables", "staging", "batch_run"),
     ["tables.staging", "batch_run", "audit tables"]),
    ("layout missing", lambda d: d["layout"].pop("trailer"), ["layout.trailer"]),
    ("field is not a table", lambda d: d["layout"]["detail"].__setitem__(2, "account"),
     ["layout.detail field 3"]),
]


@pytest.mark.parametrize(("edit", "names"), [(e, n) for _, e, n in BAD],
                         ids=[name for name, _, _ in BAD])
def test_config_errors_name_the_key(edit: Callable[[dict[str, Any]], object],
                                    names: list[str]) -> None:
    refused(edited(edit), *names)


@pytest.mark.parametrize("value", ["transactions\n", "stg\n"])
def test_identifier_with_a_trailing_newline_is_refused(value: str) -> None:
    refused(edited(_set("tables", "final", value)), "tables.final")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_heartbeat_timeout_must_be_a_finite_number(value: float) -> None:
    refused(edited(_set("workers", "heartbeat_timeout", value)), "workers.heartbeat_timeout")


def test_record_type_literal_must_be_ascii() -> None:
    refused(edited(_set_field("record_type", "value", "É")), "layout.detail.record_type.value")


def test_identifier_of_30_characters_is_accepted() -> None:
    config = parse_config(edited(_set("tables", "final", "t" * 30)), source=Path("job.toml"))
    assert config.final_table == "t" * 30


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nowhere.toml")


@pytest.mark.parametrize(("content", "needle"), [
    (b"[job\nname = 1", "cannot be read"),
    (b"\xff\xfe[job]", "cannot be read"),
    (b"", ": missing"),
])
def test_unreadable_or_empty_file(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "job.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path)


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


@pytest.mark.parametrize(("changes", "key"), [
    ({"processors": 0}, "workers.processors"),
    ({"processors": -3}, "workers.processors"),
    ({"processors": 257}, "workers.processors"),
    ({"writers": 0}, "workers.writers"),
    ({"writers": 65}, "workers.writers"),
    ({"batch_size": 0}, "workers.batch_size"),
    ({"batch_size": 1_000_001}, "workers.batch_size"),
    ({"heartbeat_timeout": 0.0}, "workers.heartbeat_timeout"),
    ({"heartbeat_timeout": -1.0}, "workers.heartbeat_timeout"),
])
def test_overrides_are_validated(changes: dict[str, Any], key: str) -> None:
    config = load_config(shipped_config())
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.with_overrides(**changes)


def test_overrides_of_none_keep_the_config() -> None:
    config = load_config(shipped_config())
    same = config.with_overrides(processors=None, writers=None, input_path=None)
    assert same == config
    assert config.with_overrides(processors=8, writers=3).processors == 8


# --- the command line -----------------------------------------------------------------------


def _assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for needle in needles:
        assert needle in lines[0]


CLI_BAD = [
    ("unknown key", ("[workers]", "[workers]\nprocesors = 3"), "workers.procesors"),
    ("string processors", ("processors = 2", 'processors = "2"'), "workers.processors"),
    ("injection in a table name",
     ('final = "transactions"', "final = \"transactions; DROP TABLE batch_run\""),
     "tables.final"),
    ("overlapping fields", ("start = 28, length = 8", "start = 27, length = 8"),
     "layout.detail.txn_date"),
    ("amount without its sign",
     ('length = 13, type = "amount", scale = 2, sign = "sign"',
      'length = 13, type = "amount", scale = 2, sign = "nosuch"'), "nosuch"),
    ("TOML syntax error", ("[tables]", "[tables"), "cannot be read"),
]


@pytest.mark.parametrize(("edit", "needle"), [(e, n) for _, e, n in CLI_BAD],
                         ids=[name for name, _, _ in CLI_BAD])
def test_cli_refuses_a_bad_config_in_one_line(tmp_path: Path, edit: tuple[str, str],
                                              needle: str) -> None:
    old, new = edit
    bad = write_job(tmp_path / "BAD.toml", (old, new))
    done = run_cli(tmp_path, "run", str(bad))
    _assert_one_line_error(done, needle)
    assert not (tmp_path / "pipeline_work").exists()  # nothing was started


def test_cli_missing_config(tmp_path: Path) -> None:
    _assert_one_line_error(run_cli(tmp_path, "run", "nowhere.toml"), "does not exist")


def test_cli_bad_processors_override(tmp_path: Path) -> None:
    _assert_one_line_error(run_cli(tmp_path, "run", "--processors", "0"), "workers.processors")

