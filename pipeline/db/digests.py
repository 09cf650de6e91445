"""Row digests: what proves, column by column, that STAGING holds what the processors made.

Counts and one amount total balance when a column changed on the way (a trigger, a
mapping error in a loader, a truncation, a coercion): only the values prove the rows.
Reading every staged row back into Python costs more than loading it on SQLite (1.3 us a
row), so each side reduces the run to one number, and only a mismatch reads rows: the
processors sum their rows' digests onto the metrics bus, the database sums the digests
of the rows it holds (``staging_digests`` in each module of pipeline.db.backends).

A row's digest is Python's ``hash()`` of the row tuple the loader sends (run id, source
line, worker id, then the stored columns, as the database returns them), folded to 32
bits: SQLite computes it in SQL through a function registered on the connection (0.6 us
a row), the processors over the tuples they build anyway (0.1 us a row). PostgreSQL
digests the row's COPY text with md5 instead (its first 32 bits): the processors write
that text anyway, and the server writes it again from the stored row in SQL (its
module), so no row leaves the server.

Python seeds its string hash per interpreter; the workers are forked from the parent and
share its seed, so their digests and the parent's agree within a run. `run --resume`, a
new interpreter, derives the processors' side again from the input file
(pipeline.reconcile.InputRows).

The source line binds every value to its record, so values moved between rows change
the sum. A changed value changes its row's digest (but with probability 2**-32) and so
the exact sum; changes in several rows cancel with probability about 2**-32.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import md5
from typing import Any

import numpy as np

HASH_FUNCTION = "pipeline_row_hash"  # row_hash, as SQLite knows it (its connect hook)
FOLD = 2**32  # each row's digest is its hash's remainder, truncated toward zero


def row_hash(*values: Any) -> int:
    """A row's hash, as the SQL function: its values as the database returns them."""
    return hash(values)


def row_digests(rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
    """Each row's digest (int64, in (-2**32, 2**32)), in row order: C's ``%``, as SQL's."""
    hashes = np.fromiter(map(hash, rows), dtype=np.int64, count=len(rows))
    return np.fmod(hashes, FOLD)


def md5_lines(text: bytes) -> np.ndarray:
    """Every newline-ended line of ``text``: the first 32 bits of its md5, a signed
    big-endian integer (int64, in order), as PostgreSQL computes it over the stored row."""
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return np.fromiter((int.from_bytes(md5(line).digest()[:4], "big", signed=True)
                        for line in lines), dtype=np.int64, count=len(lines))


def total(digests: np.ndarray) -> int:
    """The exact sum (a Python int): 2**31 rows of 32-bit digests stay within int64."""
    return int(digests.sum(dtype=np.int64))
