"""The reject file of a run: one rejected record per line, ``LINE<TAB>REASON<TAB>RAW``.

Operators want the rejects grouped by reason ("AMOUNT is not 13 digits: 412"): the
reason with the record's own bytes taken out, so that equal faults count together.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# the offending bytes, a Python literal ('...' or "...") right after the field's name
_QUOTED = re.compile(r"""(^|; )(\w+) (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") """)
_LENGTH = re.compile(r"record is \d+ bytes long")
# a binary record's reasons: a hex dump, the faulty byte's place, the record's offset
# and the value as read (first: it may hold anything)
_BINARY = [(re.compile(r" \(read as (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\)"), ""),
           (re.compile(r"X'[0-9A-F]*'"), "X'..'"), (re.compile(r"\bbyte \d+ "), "byte N "),
           (re.compile(r" \(record at byte offset \d+\)"), ""),
           (re.compile(r"\bis -?\d+: out of range"), "is out of range")]


def reason_group(reason: str) -> str:
    """The reason without the record's own values: what equal faults have in common."""
    reason = _LENGTH.sub("record is N bytes long", _QUOTED.sub(r"\1\2 ", reason))
    for pattern, placeholder in _BINARY:
        reason = pattern.sub(placeholder, reason)
    return reason


def reason_counts(path: Path | None) -> list[tuple[str, int]]:
    """Rejects per reason group, most frequent first; empty when there is no file."""
    counts: Counter[str] = Counter(reason_group(reason) for _, reason in read_rejects(path))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def read_rejects(path: Path | None) -> Iterator[tuple[int, str]]:
    """(line number, reason) of every reject in the file."""
    if path is None or not path.is_file():
        return
    with open(path, encoding="ascii", errors="replace") as f:
        for row in f:
            line, _, rest = row.partition("\t")
            if line.isdigit():
                yield int(line), rest.partition("\t")[0]


def rejected_lines(path: Path | None) -> np.ndarray:
    """The sorted source line numbers of the rejects (int64)."""
    lines = np.fromiter((line for line, _ in read_rejects(path)), dtype=np.int64)
    lines.sort()
    return lines


def reason_lines(counts: list[tuple[str, int]], limit: int = 10) -> list[str]:
    """One line per reason group for a summary: the most frequent first, then "+ N more"."""
    lines = [f"    {count:>10,}  {reason}" for reason, count in counts[:limit]]
    rest = counts[limit:]
    if rest:
        lines.append(f"    {sum(c for _, c in rest):>10,}  ({len(rest)} other reasons)")
    return lines
