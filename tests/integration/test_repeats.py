"""Key repeats are known before the MERGE: exactly one MERGE per run, last record wins.

The hashes are checked on their own (equal keys hash equal whatever the array's width,
repeats found across processors, composite keys), then whole runs on SQLite and
PostgreSQL count the MERGE statements the parent sends (a SQLAlchemy cursor event).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, create_engine, event, select

from pipeline.config import JobConfig, load_config
from pipeline.db.engine import make_engine
from pipeline.db.tables import job_tables
from pipeline.generate import generate_file
from pipeline.job import run_job
from pipeline.jobs import shipped_config
from pipeline.repeats import (
    MAX_BUCKETS,
    HashSpill,
    Repeated,
    Superseded,
    any_repeat,
    buckets_for,
    key_hashes,
    repeated_lines,
    whole_keys,
)
from tests.reference import detail, expected_from_file, write_input

pytestmark = pytest.mark.timeout(120)


def test_equal_keys_hash_equal_whatever_the_array_width() -> None:
    narrow = np.array(["AB", "ABC", "X"], dtype="U3")
    wide = np.array(["AB", "ABC", "X"], dtype="U12")
    assert (key_hashes({"k": narrow}, ["k"]) == key_hashes({"k": wide}, ["k"])).all()
    assert len(set(key_hashes({"k": narrow}, ["k"]).tolist())) == 3


def test_composite_keys_hash_every_column_and_their_boundary() -> None:
    a = np.array(["AB", "A", "AB"])
    b = np.array(["C", "BC", "D"])
    hashes = key_hashes({"a": a, "b": b}, ["a", "b"]).tolist()
    assert len(set(hashes)) == 3  # ("AB","C") is not ("A","BC"), nor ("AB","D")
    same = key_hashes({"a": np.array(["AB"], "U9"), "b": np.array(["C"], "U2")}, ["a", "b"])
    assert same[0] == hashes[0]
    numbers = key_hashes({"n": np.array([1, 2, 1], np.int64)}, ["n"]).tolist()
    assert numbers[0] == numbers[2] != numbers[1]


def spill(folder: Path, worker: int, keys: list[list[str]], first_line: int = 0,
          buckets: int = MAX_BUCKETS) -> None:
    """Batches of keys, the records numbered from ``first_line`` on; a record's value
    digest is 10x its line, its amount 100x, its hashed field (digits text) 1000x."""
    out = HashSpill(folder, worker, ["k"], buckets, amount="a", hashed="h")
    for batch in keys:
        lines = np.arange(first_line, first_line + len(batch))
        out.add({"k": np.array(batch), "a": lines * 100,
                 "h": np.array([f"{n * 1000:012d}" for n in lines])}, lines, lines * 10)
        first_line += len(batch)
    out.close()


def test_a_repeat_is_found_across_batches_and_processors(tmp_path: Path) -> None:
    spill(tmp_path, 0, [[f"K{i:06d}" for i in range(0, 5000)], ["L1", "L2"]])
    spill(tmp_path, 1, [[f"K{i:06d}" for i in range(5000, 9000)], ["L3"]])
    assert any_repeat(tmp_path) is False
    assert list(tmp_path.glob("keys.*")) == []  # read once, then removed

    spill(tmp_path, 0, [[f"K{i:06d}" for i in range(0, 5000)], ["L1"]])
    spill(tmp_path, 1, [["L2"], ["K004321"]])  # a key of processor 0, in processor 1
    assert any_repeat(tmp_path) is True
    assert list(tmp_path.glob("keys.*")) == []


def test_the_lines_of_every_record_of_a_repeated_key_are_named(tmp_path: Path) -> None:
    spill(tmp_path, 0, [["A", "B", "C"], ["D", "A"]], first_line=10)  # lines 10-14
    spill(tmp_path, 1, [["E", "C", "F", "A"]], first_line=100)  # lines 100-103
    repeated = repeated_lines(tmp_path)
    assert repeated is not None
    # each with the value digest its processor spilled (here 10x the line)
    assert sorted(zip(repeated.lines.tolist(), repeated.digests.tolist(), strict=True)) == [
        (10, 100), (12, 120), (14, 140), (101, 1010), (103, 1030)]
    assert repeated.digest_at([10, 103]) == 1130 and repeated.digest_at([]) == 0
    with pytest.raises(ValueError, match="no repeated record"):
        repeated.digest_at([11])
    with pytest.raises(ValueError, match="no repeated record"):
        repeated.digest_at([104])
    spill(tmp_path, 0, [["A", "B"]])
    assert sorted(repeated_lines(tmp_path).lines.tolist()) == []


def test_whole_keys_are_equal_exactly_when_the_keys_are() -> None:
    narrow = whole_keys({"k": np.array(["AB", "ABC", "AB\u00ff", "X"], "U4")}, ["k"])
    wide = whole_keys({"k": np.array(["AB", "ABC", "AB\u00ff", "X"], "U20")}, ["k"])
    assert narrow is not None and wide is not None and narrow.shape == (4, 2)
    assert (narrow == wide).all()  # whatever the array's width
    assert len({tuple(k) for k in narrow.tolist()}) == 4
    sixteen = whole_keys({"k": np.array(["K" * 16, "K" * 15 + "L"])}, ["k"])
    assert sixteen is not None and (sixteen[0] != sixteen[1]).any()
    numbers = whole_keys({"n": np.array([1, -1, 1, 2**40], np.int64)}, ["n"])
    assert numbers is not None and (numbers[0] == numbers[2]).all()
    assert len({tuple(k) for k in numbers.tolist()}) == 3
    # not held whole: the database compares those keys
    assert whole_keys({"k": np.array(["K" * 17])}, ["k"]) is None
    assert whole_keys({"k": np.array(["\u20ac1"])}, ["k"]) is None  # past U+00FF
    assert whole_keys({"a": np.array(["A"]), "b": np.array(["B"])}, ["a", "b"]) is None
    assert whole_keys({"n": np.array([2**70], dtype=object)}, ["n"]) is None


def test_the_superseded_records_come_from_the_whole_keys(tmp_path: Path) -> None:
    """Every record of a key but its last, with exact totals; a record there by a hash
    collision alone (another key) is superseded by nothing."""
    spill(tmp_path, 0, [["A", "B", "A"], ["C", "A"]], first_line=10)  # A: 10, 12, 14
    spill(tmp_path, 1, [["C", "D"]], first_line=100)  # C: 13 and 100
    repeated = repeated_lines(tmp_path)
    assert repeated is not None and repeated.keys is not None
    assert sorted(repeated.lines.tolist()) == [10, 12, 13, 14, 100]
    assert repeated.superseded() == Superseded(
        rows=3, amount=100 * (10 + 12 + 13), hashed=1000 * (10 + 12 + 13),
        digest=10 * (10 + 12 + 13), lines=[10, 12, 13])
    # a collision: line 7's key hash equals those of lines 5, 8 and 9, its key does not
    keys = whole_keys({"k": np.array(["Y", "X", "Y", "Y"])}, ["k"])
    assert keys is not None
    big = np.full(4, 2**62, np.int64)  # sums past int64, exact
    collided = Repeated(np.array([9, 7, 8, 5]), np.array([1, 2, 3, 4]), keys, big,
                        np.zeros(4, np.int64))
    assert collided.superseded() == Superseded(2, 2**63, 0, 3 + 4, [5, 8])
    assert Repeated(np.array([1]), np.array([1])).superseded() is None  # keys not whole


def test_a_key_not_held_whole_leaves_the_comparison_to_the_database(tmp_path: Path) -> None:
    spill(tmp_path, 0, [["A", "B", "A"]])
    spill(tmp_path, 1, [["C", "K" * 17, "C"]], first_line=100)  # one key too long
    repeated = repeated_lines(tmp_path)
    assert repeated is not None and sorted(repeated.lines.tolist()) == [0, 2, 100, 102]
    assert repeated.keys is None and repeated.superseded() is None
    assert list(tmp_path.glob("keys.*")) == []
    out = HashSpill(tmp_path, 0, ["k"], 1, amount="a")  # amounts that are not integers
    out.add({"k": np.array(["A", "A"]), "a": np.array([1, None])}, np.arange(2),
            np.arange(2))
    out.close()
    repeated = repeated_lines(tmp_path)
    assert repeated is not None and repeated.superseded() is None


def test_a_repeat_inside_one_batch_is_found_and_no_spill_means_unknown(tmp_path: Path) -> None:
    assert any_repeat(tmp_path) is None  # e.g. a resumed run: nothing was hashed
    spill(tmp_path, 0, [["A", "B", "A"]])
    assert len(list(tmp_path.glob("keys.000.*.u64"))) == MAX_BUCKETS
    assert any_repeat(tmp_path) is True


@pytest.mark.parametrize("buckets", [1, 2, 16, MAX_BUCKETS])
def test_every_bucket_count_finds_the_same_repeats(tmp_path: Path, buckets: int) -> None:
    keys = [f"K{i:06d}" for i in range(20_000)]
    spill(tmp_path, 0, [keys[:9_000], ["K012345", *keys[9_000:12_000]]], buckets=buckets)
    spill(tmp_path, 1, [[*keys[12_000:], "K000007"]], first_line=50_000, buckets=buckets)
    assert len(list(tmp_path.glob("keys.001.*.u64"))) == buckets
    # K012345: line 9,000 and processor 1's line 50,345; K000007: line 7 and 58,000
    assert sorted(repeated_lines(tmp_path).lines.tolist()) == [7, 9_000, 50_345, 58_000]
    assert list(tmp_path.glob("keys.*")) == []


def test_the_buckets_grow_with_the_file_and_stop_at_the_maximum() -> None:
    assert [buckets_for(n) for n in (0, 200_000, 1 << 18, (1 << 18) + 1, 1_000_000)] == \
        [1, 1, 1, 2, 4]
    assert buckets_for(10_000_000) == MAX_BUCKETS  # about 156k records a bucket
    assert buckets_for(10**9) == MAX_BUCKETS


@pytest.fixture
def merges() -> Iterator[list[str]]:
    """Every MERGE (SQL:2003 MERGE, or SQLite's INSERT ... ON CONFLICT) this process sends."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("MERGE INTO") or "ON CONFLICT" in statement:
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    yield sent
    event.remove(Engine, "before_cursor_execute", count)


def final_rows(config: JobConfig) -> dict[str, tuple[int, str, str | None]]:
    final = job_tables(config).final
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as conn:
            return {r.txn_id: (r.amount, r.last_run_id, r.description)
                    for r in conn.execute(select(final.c.txn_id, final.c.amount,
                                                 final.c.last_run_id, final.c.description))}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_no_repeat_one_plain_merge(tmp_path: Path, job_config: JobConfig,
                                   merges: list[str]) -> None:
    made = generate_file(tmp_path / "in.dat", 20_000, seed=3)
    config = job_config.with_overrides(input_path=made.path, processors=2, batch_size=1_000)
    outcome = run_job(config)

    assert outcome.exit_code == 0, outcome.message
    assert len(merges) == 1
    assert "row_number" not in merges[0].lower()  # the plain MERGE: no ranking of repeats
    assert outcome.duplicates_collapsed == 0
    expected = expected_from_file(made.path)
    assert {k: v[0] for k, v in final_rows(config).items()} == \
        {k: t.amount for k, t in expected.final.items()}


@pytest.mark.slow
def test_repeats_one_merge_that_leaves_out_the_superseded_records(
        tmp_path: Path, job_config: JobConfig, merges: list[str]) -> None:
    # the repeats sit in different ranges (processors) and different batches
    details = [detail(f"T{i:07d}", 100 + i) for i in range(3_000)]
    details[2_500] = detail("T0000007", 777, description="second")  # repeats line 9's key
    details[2_900] = detail("T0000007", 777, description="third")  # same amount: this wins
    details[1_600] = detail("T0001500", 5, description="later")  # a repeat in the next batch
    path = write_input(tmp_path / "in.dat", details)
    config = job_config.with_overrides(input_path=path, processors=2, batch_size=500)
    outcome = run_job(config)

    assert outcome.exit_code == 0, outcome.message
    assert len(merges) == 1
    # the records a later one supersedes are named and left out: no ranking of every row
    assert "row_number" not in merges[0].lower() and "source_line" in merges[0]
    assert outcome.duplicates_collapsed == 3
    final = final_rows(config)
    # the last record wins whole, not only its amount (the checks compare amounts)
    assert final["T0000007"][::2] == (777, "third")
    assert final["T0001500"][::2] == (5, "later")
    assert {k: v[0] for k, v in final.items()} == \
        {k: t.amount for k, t in expected_from_file(path).final.items()}


@pytest.mark.slow
def test_a_repeat_the_hashes_missed_rolls_the_plain_merge_back_and_ranks_every_row(
        tmp_path: Path, job_config: JobConfig, merges: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Impossible unless the hashes lie: the plain MERGE touches a key fewer than the run
    has keys (SQLite) or is refused (PostgreSQL: a key inserted twice, then a row updated
    twice), rolls back, and the de-duplicating MERGE decides what FINAL gets."""
    import pipeline.job

    hidden = {1_500 + 2, 1_600 + 2}  # T0001500's two records (line 1 is the header)

    def missing_one(folder: Path) -> Repeated | None:
        repeated = repeated_lines(folder)
        if repeated is None:
            return None
        kept = ~np.isin(repeated.lines, list(hidden))
        return Repeated(repeated.lines[kept], repeated.digests[kept])

    monkeypatch.setattr(pipeline.job, "repeated_lines", missing_one)
    for night in (1, 2):  # T0001500: a new key the first night, FINAL's the second
        details = [detail(f"T{i:07d}", 100 + i + night) for i in range(3_000)]
        details[2_900] = detail("T0000007", 777 + night, description=f"later {night}")
        details[1_600] = detail("T0001500", 5 + night, description=f"later {night}")
        path = write_input(tmp_path / f"in{night}.dat", details)
        config = job_config.with_overrides(input_path=path, processors=2, batch_size=500)
        merges.clear()
        outcome = run_job(config)

        assert outcome.exit_code == 0, outcome.message
        assert len(merges) == 2
        assert "row_number" not in merges[0].lower() and "row_number" in merges[1].lower()
        assert outcome.duplicates_collapsed == 2
        final = final_rows(config)
        assert final["T0000007"][::2] == (777 + night, f"later {night}")
        assert final["T0001500"][::2] == (5 + night, f"later {night}")
        assert final["T0000010"][:2] == (110 + night, outcome.run_id)


@pytest.mark.slow
def test_composite_key_repeat_needs_all_columns(tmp_path: Path, db_url: str,
                                                merges: list[str]) -> None:
    shipped = shipped_config("account_postings")
    config = load_config(shipped).with_overrides(
        output_dir=tmp_path / "work", database_url=db_url, heartbeat_timeout=10.0)
    outcome = run_job(config)  # its sample repeats one full key, and keys differing in one
    assert outcome.exit_code == 0, outcome.message
    assert len(merges) == 1 and "row_number" not in merges[0].lower()
    assert outcome.duplicates_collapsed == 1
    assert list((config.output_dir / "runs" / outcome.run_id).glob("keys.*")) == []


@pytest.mark.slow
def test_survivors_from_the_repeated_lines_equal_ranking_every_row(
        tmp_path: Path, job_config: JobConfig) -> None:
    """Lines there by a hash collision alone change nothing: here every line is passed."""
    from pipeline.db.repositories import StagingRepository

    made = generate_file(tmp_path / "in.dat", 3_000, seed=4, duplicate_rate=0.02)
    config = job_config.with_overrides(input_path=made.path)
    outcome = run_job(config)
    assert outcome.exit_code == 0 and outcome.duplicates_collapsed > 10, outcome.message
    engine = make_engine(config.database_url)  # the job's: SQLite's digest function
    tables = job_tables(config)
    try:
        with engine.connect() as conn:
            staging = StagingRepository(conn, tables, config.key_columns, config.amount)
            staged = staging.count_and_amount(outcome.run_id)
            dropped = staging.collapsed_at_lines(outcome.run_id, list(range(1, 3_100)))
            assert dropped is not None
            records, lines = dropped
            assert staged.less(records) == staging.surviving_count_and_amount(outcome.run_id)
            assert records.rows == outcome.duplicates_collapsed == len(lines)
    finally:
        engine.dispose()


def night_of_repeats(path: Path, night: int, records: int, repeats: float,
                     earlier: list[str], seed: int) -> Path:
    """``records`` records: 30% update a key of ``earlier`` (drawn with replacement, so
    some repeat), ``repeats`` of them repeat a key seen earlier in this file (some three
    times or more), the rest are new keys. Each record's description names its line, so
    "the last record wins" is seen whole, not only in the amounts the checks compare."""
    rng = np.random.default_rng(seed)
    keys: list[str] = []
    for i in range(records):
        if keys and rng.random() < repeats:
            keys.append(keys[int(rng.integers(0, len(keys)))])
        elif earlier and rng.random() < 0.3:
            keys.append(earlier[int(rng.integers(0, len(earlier)))])
        else:
            keys.append(f"N{night}K{i:06d}")
    details = [detail(k, int(rng.integers(-99_999, 999_999)), description=f"n{night} line {i}")
               for i, k in enumerate(keys)]
    return write_input(path, details)


def test_any_share_of_repeats_one_plain_merge_last_record_wins(
        tmp_path: Path, job_config: JobConfig, merges: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """30% and then 45% of the records repeat a key (the old cutoff ranked every row, and
    MERGEd with a ranking, past 1% of the run or 100,000 records): no step ranks every
    row of the run and the one MERGE is the plain one. FINAL is exactly the last record
    of each key over two nights, and the checks' figures are the survivors'. The keys
    (one column of 16 characters) are spilled whole: the database is not asked which
    records are superseded."""
    from pipeline.audit.schema import from_audit
    from pipeline.db.repositories import StagingRepository
    from recon.checks import STAGING_TO_FINAL, STAGING_TO_FINAL_AMOUNT

    monkeypatch.setattr(StagingRepository, "surviving_count_and_amount", _rank_every_row)
    monkeypatch.setattr(StagingRepository, "collapsed_at_lines", _rank_every_row)
    tables = job_tables(job_config)
    expected: dict[str, tuple[int, str]] = {}
    for night, share in ((1, 0.30), (2, 0.45)):
        path = night_of_repeats(tmp_path / f"in{night}.dat", night, 1_500, share,
                                sorted(expected), seed=night)
        config = job_config.with_overrides(input_path=path, processors=2, batch_size=250)
        merges.clear()
        outcome = run_job(config)

        assert outcome.exit_code == 0, outcome.message
        assert len(merges) == 1
        assert "row_number" not in merges[0].lower() and "source_line" in merges[0]
        tonight = expected_from_file(path)
        distinct = len(tonight.final)
        assert outcome.duplicates_collapsed == 1_500 - distinct > 1_500 * share * 0.8
        expected.update({k: (t.amount, t.description) for k, t in tonight.final.items()})
        final = final_rows(config)
        assert {k: (v[0], v[2]) for k, v in final.items()} == expected
        assert {k for k, v in final.items() if v[1] == outcome.run_id} == set(tonight.final)
        # the checks: expected = the survivors (one per key, its last record), actual = FINAL
        survivors_amount = sum(t.amount for t in tonight.final.values())
        by_name = {r.check_name: r for r in outcome.results}
        assert (by_name[STAGING_TO_FINAL].expected_count,
                by_name[STAGING_TO_FINAL].actual_count) == (distinct, distinct)
        assert (by_name[STAGING_TO_FINAL_AMOUNT].expected_amount,
                by_name[STAGING_TO_FINAL_AMOUNT].actual_amount) == \
            (survivors_amount, survivors_amount)
        engine = create_engine(config.database_url)
        try:
            with engine.connect() as conn:
                audit = {r.check_name: r for r in conn.execute(
                    select(tables.recon_audit).where(
                        tables.recon_audit.c.run_id == outcome.run_id))}
        finally:
            engine.dispose()
        assert (audit[STAGING_TO_FINAL].expected_cnt, audit[STAGING_TO_FINAL].passed) == \
            (distinct, "Y")
        assert from_audit(audit[STAGING_TO_FINAL_AMOUNT].expected_amt, 2) == survivors_amount
        assert "collapsed" in (audit[STAGING_TO_FINAL].detail or "")


def _rank_every_row(*_args: Any) -> tuple[int, int]:
    raise AssertionError("every staging row of the run ranked to count the survivors")


@pytest.mark.parametrize("lines", [3_000, 250_000])
def test_past_the_old_cutoff_the_survivors_come_from_the_repeated_lines(
        tmp_path: Path, job_config: JobConfig, monkeypatch: pytest.MonkeyPatch,
        lines: int) -> None:
    """The reconciliation given 250,000 repeated lines (the old cutoff: 100,000, or 1% of
    the run) for a run of 3,000 records: lines without a record, or there by a hash
    collision, change nothing, every row is never ranked, and the figures and the
    superseded lines are those of ranking every row."""
    from pipeline.db.repositories import StagingRepository
    from pipeline.reconcile import ReconciliationService
    from recon.values import TrailerTotals

    path = night_of_repeats(tmp_path / "in.dat", 1, 3_000, 0.2, [], seed=7)
    outcome = run_job(job_config.with_overrides(input_path=path))
    assert outcome.exit_code == 0, outcome.message
    expected = expected_from_file(path)
    tables = job_tables(job_config)
    engine = make_engine(job_config.database_url)  # the job's: SQLite's digest function
    try:
        with engine.connect() as conn:
            staging = StagingRepository(conn, tables, job_config.key_columns,
                                        job_config.amount)
            staged = staging.count_and_amount(outcome.run_id)
            ranked = staging.surviving_count_and_amount(outcome.run_id)
        monkeypatch.setattr(StagingRepository, "surviving_count_and_amount", _rank_every_row)
        service = ReconciliationService(engine, tables, job_config.key_columns,
                                        job_config.amount,
                                        TrailerTotals(staged.rows, staged.amount))
        every = np.arange(1, lines + 1, dtype=np.int64)
        survivors, superseded = service._survivors_from(
            outcome.run_id, Repeated(every, np.zeros(lines, np.int64)), staged)
    finally:
        engine.dispose()
    assert (survivors.rows, survivors.amount) == ranked[:2] == \
        (len(expected.final), sum(t.amount for t in expected.final.values()))
    last = {t.txn_id: t.line for t in expected.final.values()}
    assert superseded == sorted(t.line for t in expected.accepted if last[t.txn_id] != t.line)
