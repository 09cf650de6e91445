"""The processors' digests of COPY text are PostgreSQL's ``hashtext()`` of the same bytes:
values PostgreSQL 15 returned, at every length around its 12-byte blocks, multibyte text
included (tests/integration/test_column_proof.py asks a live server too)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.db.digests import text_hashes

# SELECT t, hashtext(t) FROM unnest(...) t, on PostgreSQL 15.20 (a UTF-8 database)
HASHTEXT = [
    ("", -1477818771),
    ("a", 1075015857),
    ("abc", -785388649),
    ("caf\u00e9", 103771354),
    ("0123456789a", -1884806007),
    ("0123456789ab", -1437215093),
    ("0123456789abc", -1125236995),
    ("x" * 23, 597544042),
    ("x" * 24, 1380215333),
    ("x" * 25, 733930510),
    ("K1\t0012345678\t-10.01\t2026-12-04\tback\\slash\tEUR", 1571135080),
]


def test_text_hashes_are_postgresqls_hashtext() -> None:
    texts = [t.encode("utf-8") for t, _ in HASHTEXT]
    assert text_hashes(texts).tolist() == [h for _, h in HASHTEXT]


@pytest.mark.parametrize("order", [slice(None), slice(None, None, -1)])
def test_text_hashes_do_not_depend_on_the_other_texts(order: slice) -> None:
    """Texts of every length in one call, in either order: each hash is its own."""
    chosen = HASHTEXT[order]
    found = text_hashes([t.encode("utf-8") for t, _ in chosen])
    assert found.dtype == np.int64 and found.tolist() == [h for _, h in chosen]
    assert text_hashes([]).tolist() == []
