"""A small COBOL copybook parser: 01-level records flattened to elementary items.

What it reads is what record descriptions of batch extracts hold: level numbers and
nested groups, FILLER, REDEFINES, fixed OCCURS n TIMES (flattened to name_1 ... name_n),
OCCURS m TO n TIMES DEPENDING ON a count, as the record's last item (flattened to n
occurrences; those past the count are absent, see ``Odo``),
PIC X / A / 9 / S9 with V and P, SIGN LEADING|TRAILING [SEPARATE [CHARACTER]], USAGE
DISPLAY / COMP-3 / PACKED-DECIMAL / COMP / COMP-4 / BINARY / COMP-5, VALUE and 88-levels
(ignored). Anything that changes the layout in a way this job cannot store exactly
(an OCCURS DEPENDING ON with items after it, COMP-1/COMP-2 floats, SYNCHRONIZED,
edited pictures, RENAMES, POINTER/INDEX) is refused with a CopybookError naming the line,
and so is anything malformed: every size, repeat count and OCCURS count is bounded by a
record's 32,760 bytes before anything is expanded, so no copybook costs more than
milliseconds. The text itself (fixed/free format, continuation lines, COPY members) is
read by copybook_text.

The PyPI ``copybook`` package (1.0.16) was evaluated and not used: it has no COMP/BINARY,
no COMP-5, no P scaling, no SIGN LEADING without SEPARATE, sizes COMP-3 fields as if
they were DISPLAY, decodes decimals to float and reports no line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from pipeline.layouts.copybook_text import CopybookError, Source, read_copybook_text

__all__ = ["CopybookError", "Item", "Record", "Usage", "parse_copybook", "parse_copybook_file"]


class Usage(StrEnum):
    DISPLAY = "display"  # text, or zoned decimal for a numeric PIC
    PACKED = "packed"  # COMP-3 / PACKED-DECIMAL
    BINARY = "binary"  # COMP / COMP-4 / BINARY: big-endian, limited to the PIC's digits
    NATIVE = "native"  # COMP-5: big-endian, the full range of its bytes


@dataclass(frozen=True)
class Item:
    """An elementary item of a record: where it is and how its bytes encode its value."""

    name: str  # COBOL name, lower case with '_' for '-' (occurrences get _1, _2, ...)
    offset: int  # 0-based byte offset in the record
    size: int  # bytes
    numeric: bool
    usage: Usage
    digits: int = 0  # numeric: digit positions of the PIC (9s, not Ps)
    scale: int = 0  # numeric: decimal places; negative for trailing P (x 10**-scale)
    signed: bool = False
    sign_leading: bool = False
    sign_separate: bool = False
    line: int = 0  # where the copybook defines it
    occurrence: int = 0  # in the OCCURS DEPENDING ON table: its entry (1..); else 0

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Odo:
    """A record's OCCURS m TO n TIMES DEPENDING ON table, its last item: the record holds
    ``count`` entries (least <= count <= most) and is ``start + count * entry`` bytes.
    Its items are laid out for ``most`` entries (``Item.occurrence``)."""

    table: str  # the OCCURS item's name
    counter: str  # the item holding the count, before the table
    least: int
    most: int
    start: int  # offset of the first entry
    entry: int  # bytes per entry

    def clause(self) -> str:
        return f"{self.table} OCCURS {self.least} TO {self.most} DEPENDING ON {self.counter}"


@dataclass(frozen=True)
class Record:
    """A 01-level record: its elementary items (REDEFINES alternatives left out)."""

    name: str
    size: int
    items: tuple[Item, ...]
    line: int
    origins: Mapping[int, str] = field(default_factory=dict)  # lines from COPY members
    odo: Odo | None = None  # its OCCURS DEPENDING ON table; ``size`` counts ``most`` entries

    def at(self, line: int) -> str:
        """Where an item's line is: 'copybook line 12', or in the COPY member it came from."""
        return self.origins.get(line, f"copybook line {line}")

    def item(self, name: str) -> Item:
        for it in self.items:
            if it.name == name:
                return it
        raise KeyError(name)


@dataclass
class _Entry:
    level: int
    name: str
    line: int
    pic: str = ""
    usage: Usage | None = None
    occurs: int = 1
    least: int | None = None  # OCCURS least TO occurs DEPENDING ON depending
    depending: str = ""
    redefines: str = ""
    sign_leading: bool | None = None
    sign_separate: bool = False
    children: list[_Entry] = field(default_factory=list)


_REFUSED = {
    "DEPENDING": "DEPENDING ON belongs to an OCCURS m TO n TIMES (a variable table)",
    "COMP-1": "COMP-1 (a binary float) cannot hold money exactly",
    "COMP-2": "COMP-2 (a binary float) cannot hold money exactly",
    "COMPUTATIONAL-1": "COMPUTATIONAL-1 (a binary float) cannot hold money exactly",
    "COMPUTATIONAL-2": "COMPUTATIONAL-2 (a binary float) cannot hold money exactly",
    "SYNC": "SYNCHRONIZED (slack bytes) is not supported",
    "SYNCHRONIZED": "SYNCHRONIZED (slack bytes) is not supported",
    "POINTER": "USAGE POINTER is not data",
    "INDEX": "USAGE INDEX is not data",
    "NATIONAL": "USAGE NATIONAL (UTF-16) is not supported",
}
_USAGES = {
    "DISPLAY": Usage.DISPLAY,
    "COMP-3": Usage.PACKED, "COMPUTATIONAL-3": Usage.PACKED, "PACKED-DECIMAL": Usage.PACKED,
    "COMP": Usage.BINARY, "COMPUTATIONAL": Usage.BINARY, "COMP-4": Usage.BINARY,
    "COMPUTATIONAL-4": Usage.BINARY, "BINARY": Usage.BINARY,
    "COMP-5": Usage.NATIVE, "COMPUTATIONAL-5": Usage.NATIVE,
}
_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|[^\s]+")
_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: int() of '²' raises, of 10**5000 too
# z/OS LRECL limit of a non-spanned record: every size is checked against it before
# anything is expanded, so a typo (X(99999999999), OCCURS 999999999999) is one line of
# error, never a MemoryError or minutes of CPU
MAX_RECORD_BYTES = 32_760


def parse_copybook_file(path: Path, library: Sequence[Path] = ()) -> dict[str, Record]:
    return parse_copybook(read_copybook_text(path), str(path), library)


def parse_copybook(text: str, name: str = "copybook",
                   library: Sequence[Path] = ()) -> dict[str, Record]:
    """The 01-level records of a copybook, by name (lower case, '-' as '_'); its
    ``COPY member.`` statements are read from the ``library`` folders."""
    source = Source(name, library)
    entries = _entries(source.lines(text), source)
    records: dict[str, Record] = {}
    for top in _tree(entries, source):
        if top.redefines and top.redefines not in records:
            raise CopybookError(f"{source.at(top.line)}: {top.name} REDEFINES "
                                f"{top.redefines}, which is not an earlier 01 record")
        items: list[Item] = []
        spans: dict[int, tuple[int, int]] = {}
        size = _layout(top, 0, "", items, source, spans=spans)
        odo = _odo(top, items, size, spans, source)
        if odo is not None:
            items = [it if it.offset < odo.start else
                     replace(it, occurrence=(it.offset - odo.start) // odo.entry + 1)
                     for it in items]
        records[top.name] = Record(top.name, size, tuple(items), top.line, source.origins,
                                   odo)
    if not records:
        raise CopybookError(f"{source}: no 01-level record found")
    return records


def _entries(lines: list[tuple[int, str]], source: Source) -> list[_Entry]:
    """One _Entry per period-ended data description entry."""
    tokens: list[tuple[int, str]] = []
    for number, ln in lines:
        tokens.extend((number, m.group()) for m in _TOKEN.finditer(ln))
    entries, sentence = [], []
    for number, tok in tokens:
        ends = tok.endswith(".") and not tok.startswith(("'", '"'))
        if ends:
            tok = tok[:-1]
        if tok:
            sentence.append((number, tok))
        if ends and sentence:
            entry = _entry(sentence, source)
            if entry is not None:
                entries.append(entry)
            sentence = []
    if sentence:
        raise CopybookError(f"{source.at(sentence[0][0])}: entry does not end with a period")
    return entries


def _entry(sentence: list[tuple[int, str]], source: Source) -> _Entry | None:
    line = sentence[0][0]
    words = [w for _, w in sentence]
    where = f"{source.at(line)}"
    if not re.fullmatch(r"[0-9]{1,2}", words[0]):
        raise CopybookError(f"{where}: expected a level number, got {words[0][:40]!r}")
    level = int(words[0])
    if level == 88:
        return None  # condition names describe values, not bytes
    if level == 66:
        raise CopybookError(f"{where}: 66-level RENAMES is not supported")
    if not (1 <= level <= 49 or level == 77):
        raise CopybookError(f"{where}: level {level} is not a data level (01-49)")
    rest = words[1:]
    name = "filler"
    if rest and rest[0].upper() not in ("PIC", "PICTURE", "REDEFINES", "OCCURS", "USAGE",
                                        "VALUE", "SIGN") and rest[0].upper() not in _USAGES:
        name = rest.pop(0).lower().replace("-", "_")
    entry = _Entry(level=1 if level == 77 else level, name=name, line=line)
    _clauses(entry, rest, where)
    return entry


_NOISE = {"IS", "ARE", "TIMES", "CHARACTER", "GLOBAL", "EXTERNAL", "USAGE", "SIGN"}
_NAMES_FOLLOW = {"BY", "KEY"}  # INDEXED BY i ..., ASCENDING KEY IS k ...: names, no layout
_CLAUSE_WORDS = {"PIC", "PICTURE", "REDEFINES", "OCCURS", "SIGN", "LEADING", "TRAILING",
                 "SEPARATE", "VALUE", "VALUES", "USAGE", "INDEXED", "ASCENDING", "DESCENDING",
                 *_USAGES, *_REFUSED}


_ONCE = {"PIC": "PIC", "PICTURE": "PIC", "REDEFINES": "REDEFINES", "OCCURS": "OCCURS",
         "LEADING": "SIGN", "TRAILING": "SIGN", **{u: "USAGE" for u in _USAGES}}


def _clauses(entry: _Entry, words: list[str], where: str) -> None:
    i, names, seen = 0, False, set()
    while i < len(words):
        w = words[i].upper()
        if names and w not in _CLAUSE_WORDS:
            i += 1
            continue
        names = False
        if w in _REFUSED:
            raise CopybookError(f"{where}: {_REFUSED[w]}")
        if w in _ONCE:
            if _ONCE[w] in seen:  # which one would the compiler take? neither: refuse
                raise CopybookError(f"{where}: {entry.name} has two {_ONCE[w]} clauses")
            seen.add(_ONCE[w])
        if w in ("PIC", "PICTURE"):
            i += 1
            if i < len(words) and words[i].upper() == "IS":
                i += 1
            if i >= len(words):
                raise CopybookError(f"{where}: PIC without a picture string")
            entry.pic = words[i].upper()
        elif w == "REDEFINES":
            i += 1
            if i >= len(words) or words[i].upper() in _CLAUSE_WORDS:
                raise CopybookError(f"{where}: REDEFINES without the name it redefines")
            entry.redefines = words[i].lower().replace("-", "_")
        elif w == "OCCURS":
            i += 1
            if i + 2 < len(words) and words[i + 1].upper() == "TO":
                i = _depending(entry, words, i, where)
            else:
                entry.occurs = _occurs(words[i] if i < len(words) else "", where)
        elif w in ("LEADING", "TRAILING"):
            entry.sign_leading = w == "LEADING"
        elif w == "SEPARATE":
            entry.sign_separate = True
        elif w in _USAGES:
            entry.usage = _USAGES[w]
        elif w in ("VALUE", "VALUES"):
            i = _skip_value(words, i + 1)  # the initial value: irrelevant to the layout
        elif w in ("JUST", "JUSTIFIED", "BLANK"):
            raise CopybookError(f"{where}: {w} is not supported")
        elif w in _NAMES_FOLLOW:
            names = True
        elif w not in _NOISE and w not in ("INDEXED", "ASCENDING", "DESCENDING"):
            # a clause this parser does not know could change the layout: never guess
            raise CopybookError(f"{where}: unknown clause {words[i][:40]!r}")
        i += 1


def _occurs(word: str, where: str) -> int:
    if not word.isascii() or not word.isdigit():
        raise CopybookError(f"{where}: OCCURS needs a fixed number of times, got {word[:40]!r}")
    if not _NUMBER.fullmatch(word) or not 1 <= int(word) <= MAX_RECORD_BYTES:
        raise CopybookError(f"{where}: OCCURS {word[:40]} TIMES: a table holds 1 to "
                            f"{MAX_RECORD_BYTES} occurrences")
    return int(word)


def _depending(entry: _Entry, words: list[str], i: int, where: str) -> int:
    """OCCURS m TO n [TIMES] DEPENDING [ON] name, from m at ``i``; the index of name."""
    j = i + 3 + (i + 3 < len(words) and words[i + 3].upper() == "TIMES")
    if j >= len(words) or words[j].upper() != "DEPENDING":
        raise CopybookError(f"{where}: OCCURS m TO n without DEPENDING ON: a variable "
                            "table needs the item holding its count")
    j += 1 + (j + 1 < len(words) and words[j + 1].upper() == "ON")
    if j >= len(words):
        raise CopybookError(f"{where}: DEPENDING ON names no item")
    if not _NUMBER.fullmatch(words[i]):
        raise CopybookError(f"{where}: OCCURS {words[i][:40]} TO: expected a number")
    entry.least, entry.occurs = int(words[i]), _occurs(words[i + 2], where)
    if entry.least > entry.occurs:
        raise CopybookError(f"{where}: OCCURS {entry.least} TO {entry.occurs}: expected "
                            "0 <= m <= n and n >= 1")
    entry.depending = words[j].lower().replace("-", "_")
    return j


def _skip_value(words: list[str], i: int) -> int:
    """Index of the last word of VALUE [IS|ARE] [ALL] literal."""
    while i < len(words) and words[i].upper() in ("IS", "ARE", "ALL"):
        i += 1
    return i


def _tree(entries: list[_Entry], source: Source) -> list[_Entry]:
    """The 01 entries, each holding its subordinate entries."""
    tops: list[_Entry] = []
    stack: list[_Entry] = []
    for e in entries:
        if e.level == 1:
            if e.occurs > 1:
                raise CopybookError(f"{source.at(e.line)}: a 01 record cannot OCCUR")
            tops.append(e)
            stack = [e]
            continue
        if not stack:
            raise CopybookError(f"{source.at(e.line)}: level {e.level:02d} before any 01")
        while stack and stack[-1].level >= e.level:
            stack.pop()
        if not stack:
            raise CopybookError(f"{source.at(e.line)}: level {e.level:02d} has no parent")
        if stack[-1].pic:
            raise CopybookError(f"{source.at(e.line)}: {stack[-1].name} has a PIC, "
                                "so it cannot have subordinate items")
        stack[-1].children.append(e)
        stack.append(e)
    return tops


def _odo(top: _Entry, items: list[Item], size: int, spans: dict[int, tuple[int, int]],
         source: Source) -> Odo | None:
    """The record's OCCURS DEPENDING ON table: at most one, its last item, its count a
    number before it (what keeps every other item at a fixed offset)."""
    tables = [e for e in _walk(top) if e.depending]
    if not tables:
        return None
    e = tables[0]
    where = source.at(e.line)
    if len(tables) > 1:
        raise CopybookError(f"{where}: one OCCURS DEPENDING ON per record is supported")
    if id(e) not in spans:  # inside a REDEFINES: laid out as another view, or not at all
        raise CopybookError(f"{where}: an OCCURS DEPENDING ON inside a REDEFINES")
    start, entry = spans[id(e)]
    if start + entry * e.occurs != size:
        raise CopybookError(f"{where}: OCCURS DEPENDING ON must be the record's last item "
                            "(the items after it would move with the count)")
    counter = next((it for it in items if it.name == e.depending), None)
    if counter is None or not counter.numeric or counter.end > start:
        raise CopybookError(f"{where}: DEPENDING ON {e.depending}: expected a numeric item "
                            "of the record before the table")
    return Odo(e.name, e.depending, e.least or 0, e.occurs, start, entry)


def _walk(e: _Entry) -> list[_Entry]:
    return [e] + [d for c in e.children for d in _walk(c)]


def _layout(e: _Entry, offset: int, suffix: str, out: list[Item], source: Source,
            usage: Usage | None = None, sign: tuple[bool | None, bool] = (None, False),
            spans: dict[int, tuple[int, int]] | None = None) -> int:
    """Append the items of ``e`` (all its occurrences) at ``offset``; return its size.
    ``spans`` gets each OCCURS DEPENDING ON entry's (offset, bytes per occurrence)."""
    usage, sign = _inherit(e, usage, sign)
    one = _size_of(e, source, usage, sign)
    if e.depending and spans is not None:
        spans[id(e)] = (offset, one)
    for k in range(e.occurs):
        sfx = f"{suffix}_{k + 1}" if e.occurs > 1 else suffix
        start = offset + k * one
        if e.children:
            pos = start
            for child in e.children:
                if child.redefines:
                    continue  # an alternative view of bytes already described
                pos += _layout(child, pos, sfx, out, source, usage, sign, spans)
        elif e.name != "filler":
            out.append(_item(e, start, one, sfx, source, usage, sign))
    return one * e.occurs


def _inherit(e: _Entry, usage: Usage | None,
             sign: tuple[bool | None, bool]) -> tuple[Usage | None, tuple[bool | None, bool]]:
    """USAGE and SIGN written on a group apply to its items, unless an item says otherwise."""
    usage = e.usage or usage
    sign = (e.sign_leading, e.sign_separate) if e.sign_leading is not None else sign
    return usage, sign


def _size_of(e: _Entry, source: Source, usage: Usage | None,
             sign: tuple[bool | None, bool]) -> int:
    """Bytes of one occurrence of ``e``: every subtotal bounded, REDEFINES checked."""
    usage, sign = _inherit(e, usage, sign)
    if not e.children:
        if not e.pic:
            raise CopybookError(f"{source.at(e.line)}: {e.name} has neither a PIC nor items")
        return _item(e, 0, 0, "", source, usage, sign).size
    total, sizes = 0, dict[str, int]()
    for c in e.children:
        size = _bounded(_size_of(c, source, usage, sign) * c.occurs, c, source)
        if c.redefines:
            _check_redefines(c, size, sizes, source)
        else:
            total = _bounded(total + size, e, source)
        sizes[c.name] = size
    return total


def _bounded(size: int, e: _Entry, source: Source) -> int:
    if size > MAX_RECORD_BYTES:
        raise CopybookError(f"{source.at(e.line)}: {e.name} is {size:,} bytes, more than "
                            f"a record holds ({MAX_RECORD_BYTES:,})")
    return size


def _check_redefines(e: _Entry, size: int, sizes: dict[str, int], source: Source) -> None:
    """COBOL: an item redefines an earlier item of its level, and is not longer."""
    where = f"{source.at(e.line)}: {e.name} REDEFINES {e.redefines}"
    if e.redefines not in sizes:
        raise CopybookError(f"{where}, which is not an earlier item of the same group")
    if size > sizes[e.redefines]:
        raise CopybookError(f"{where}, but is {size} bytes where {e.redefines} is "
                            f"{sizes[e.redefines]}: a REDEFINES may not be longer")


def _item(e: _Entry, offset: int, size: int, suffix: str, source: Source, usage: Usage | None,
          sign: tuple[bool | None, bool]) -> Item:
    where = f"{source.at(e.line)}"
    pic = _expand(e.pic, where)
    usage = usage or Usage.DISPLAY
    if set(pic) <= {"X", "A"}:
        if usage is not Usage.DISPLAY:
            raise CopybookError(f"{where}: PIC {e.pic} with USAGE {usage.name} is not text")
        return Item(e.name + suffix, offset, len(pic), False, usage, line=e.line)
    signed = pic.startswith("S")
    body = pic[1:] if signed else pic
    if not re.fullmatch(r"P*9*V?9*P*|P*V?P*9+|9+P*V?", body) or "9" not in body:
        raise CopybookError(f"{where}: PIC {e.pic} is not a supported picture "
                            "(edited pictures and mixed text/numbers are not data)")
    digits = body.count("9")
    int_part, _, frac = body.partition("V")
    if "P" in int_part and int_part.startswith("P"):  # PPP999: a fraction, scaled down
        scale = len(int_part)
    elif "P" in int_part:  # 999PP: scaled up
        scale = -int_part.count("P")
    else:
        scale = len(frac)
    leading, separate = sign if signed else (None, False)
    if separate and usage is not Usage.DISPLAY:
        raise CopybookError(f"{where}: SIGN SEPARATE needs USAGE DISPLAY")
    nbytes = _bytes(digits, usage, separate, where)
    return Item(e.name + suffix, offset, nbytes, True, usage, digits, scale, signed,
                bool(leading), separate, e.line)


def _bytes(digits: int, usage: Usage, separate: bool, where: str) -> int:
    if digits > 31:
        raise CopybookError(f"{where}: more than 31 digits is not a COBOL number")
    if usage is Usage.PACKED:
        return digits // 2 + 1
    if usage in (Usage.BINARY, Usage.NATIVE):
        if digits > 18:
            raise CopybookError(f"{where}: a binary item holds at most 18 digits")
        return 2 if digits <= 4 else 4 if digits <= 9 else 8
    return digits + (1 if separate else 0)


_REPEAT = re.compile(r"([A-Z9])\(([0-9]+)\)")


def _expand(pic: str, where: str) -> str:
    """X(3)9(2) -> XXX99, the repeat counts bounded before anything is repeated."""
    shown = pic if len(pic) <= 40 else pic[:40] + "..."
    size = len(_REPEAT.sub("", pic))
    for m in _REPEAT.finditer(pic):
        if not _NUMBER.fullmatch(m.group(2)) or int(m.group(2)) > MAX_RECORD_BYTES:
            raise CopybookError(f"{where}: PIC {shown}: repeat count {m.group(2)[:20]} is more "
                                f"than a record holds ({MAX_RECORD_BYTES:,} bytes)")
        if int(m.group(2)) == 0:
            raise CopybookError(f"{where}: PIC {shown}: a repeat count of 0 (an item has at "
                                "least one character)")
        size += int(m.group(2))
    if size > MAX_RECORD_BYTES:
        raise CopybookError(f"{where}: PIC {shown} is {size:,} characters, more than a "
                            f"record holds ({MAX_RECORD_BYTES:,} bytes)")
    out = _REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), pic)
    if "(" in out or ")" in out:
        raise CopybookError(f"{where}: PIC {shown} has a malformed repeat count")
    return out
