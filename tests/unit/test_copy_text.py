"""PostgreSQL's COPY text built in numpy (pipeline.db.copy_text) is byte for byte the text
the loader joins in Python, and its digests are those of the same bytes; a batch it cannot
build (characters past ASCII, a field that may be absent) is left to Python."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from pipeline.config import load_config
from pipeline.db.bulk import StagingBatch, loader_for
from pipeline.db.copy_text import copy_payload, copy_text
from pipeline.db.digests import text_hashes
from pipeline.db.tables import job_tables
from pipeline.jobs import shipped_config

pytestmark = pytest.mark.timeout(120)

CONFIG = load_config(shipped_config())
LOADER = loader_for(job_tables(CONFIG), CONFIG.detail, CONFIG.amount,
                    postgresql.psycopg.dialect(), 10_000)
FAST = settings(deadline=None, max_examples=80, database=None,
                suppress_health_check=[HealthCheck.too_slow])

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
amounts = st.one_of(st.integers(-999, 999),
                    st.integers(-(10**18) + 1, 10**18 - 1),
                    st.sampled_from([0, 1, -1, 99, -99, 100, -100, 10**17, -(10**17)]))


def batch(descriptions: list[str], money: list[int], line: int = 2) -> StagingBatch:
    n = len(descriptions)
    return StagingBatch("20261206T030000-0a1b2c3d", 7, np.arange(line, line + n), {
        "txn_id": np.array([f"T{i}" for i in range(n)], "U16"),
        "account_id": np.array(["0123456789"] * n),
        "txn_date": np.array(["2026-12-06"] * n),
        "amount": np.array(money, np.int64),
        "currency": np.array(["EUR"] * n),
        # columns_of's text: trimmed of trailing spaces, blank as ""
        "description": np.array([d.rstrip(" ") for d in descriptions], "U40"),
    })


def joined_in_python(staged: StagingBatch) -> tuple[bytes, list[bytes], list[bytes]]:
    lines, values = LOADER._lines(staged)
    encoded = [line.encode("utf-8") for line in lines]
    return (LOADER._encoded(encoded), encoded, [v.encode("utf-8") for v in values])


@FAST
@given(st.lists(st.tuples(printable, amounts), min_size=1, max_size=30),
       st.integers(1, 10**12))
def test_the_numpy_text_is_the_python_text(rows: list[tuple[str, int]], line: int) -> None:
    staged = batch([d for d, _ in rows], [a for _, a in rows], line)
    built = copy_text(staged.run_id, staged.lines, staged.worker_id, LOADER.fields,
                      staged.columns)
    assert built is not None
    payload, lines, values = joined_in_python(staged)
    assert built.payload == payload
    assert built.line_hashes.tolist() == text_hashes(lines).tolist()
    assert built.value_hashes.tolist() == text_hashes(values).tolist()
    assert copy_payload(staged.run_id, staged.lines, staged.worker_id, LOADER.fields,
                        staged.columns) == payload


def test_escapes_blanks_and_amounts_around_the_point() -> None:
    staged = batch(["", "back\\slash", "\\", " lead", "x" * 40, "a\\\\b"],
                   [0, -5, 5, -100, 123456789012345678, -999_999_999_999_999_999])
    built = copy_text(staged.run_id, staged.lines, staged.worker_id, LOADER.fields,
                      staged.columns)
    assert built is not None and built.payload == joined_in_python(staged)[0]
    first = built.payload.split(b"\n")[0].split(b"\t")
    assert first[6] == b"0.00" and first[-1] == b"\\N"
    assert b"\t-0.05\t" in built.payload and b"\tback\\\\slash\n" in built.payload


def test_what_only_python_writes_is_left_to_it() -> None:
    for text in ("CAF\u00c9 cr\u00e8me", "tab\there", "\x7f"):
        odd = batch([text, "plain"], [1, 2])
        assert copy_text(odd.run_id, odd.lines, odd.worker_id, LOADER.fields,
                         odd.columns) is None, text
    staged = batch(["CAF\u00c9 cr\u00e8me", "plain"], [1, 2])
    sent = LOADER.encode_digested(staged)  # the loader joins it in Python
    payload, lines, values = joined_in_python(staged)
    assert sent.payload == payload and LOADER.encode(staged) == payload
    assert sent.row_digests.tolist() == text_hashes(lines).tolist()
    optional = [replace(f, optional=True) if f.name == "description" else f
                for f in LOADER.fields]
    staged = batch(["a", "b"], [1, 2])
    assert copy_text(staged.run_id, staged.lines, staged.worker_id, optional,
                     staged.columns) is None
    too_big = batch(["a"], [0])
    too_big.columns["amount"][0] = 10**18  # past 18 digits: format_minor writes it
    assert copy_text(too_big.run_id, too_big.lines, too_big.worker_id, LOADER.fields,
                     too_big.columns) is None
