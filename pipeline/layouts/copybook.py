"""A small COBOL copybook parser: 01-level records flattened to elementary items.

What it reads is what record descriptions of batch extracts hold: level numbers and
nested groups, FILLER, REDEFINES, fixed OCCURS n TIMES (flattened to name_1 ... name_n),
PIC X / A / 9 / S9 with V and P, SIGN LEADING|TRAILING [SEPARATE [CHARACTER]], USAGE
DISPLAY / COMP-3 / PACKED-DECIMAL / COMP / COMP-4 / BINARY / COMP-5, VALUE and 88-levels
(ignored). Anything that changes the layout in a way this job cannot store exactly
(OCCURS DEPENDING ON, COMP-1/COMP-2 floats, SYNCHRONIZED, edited pictures, RENAMES,
POINTER/INDEX) is refused with a CopybookError naming the line.

The PyPI ``copybook`` package (1.0.16) was evaluated and not used: it has no COMP/BINARY,
no COMP-5, no P scaling, no SIGN LEADING without SEPARATE, sizes COMP-3 fields as if
they were DISPLAY, decodes decimals to float and reports no line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pipeline.errors import ConfigError


class CopybookError(ConfigError):
    """The copybook cannot be read into a record layout (names the line)."""


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

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Record:
    """A 01-level record: its elementary items (REDEFINES alternatives left out)."""

    name: str
    size: int
    items: tuple[Item, ...]
    line: int
    origins: Mapping[int, str] = field(default_factory=dict)  # lines from COPY members

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
    redefines: str = ""
    sign_leading: bool | None = None
    sign_separate: bool = False
    children: list[_Entry] = field(default_factory=list)


_REFUSED = {
    "DEPENDING": "OCCURS DEPENDING ON (a variable-length table) is not supported",
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
MAX_COPYBOOK_BYTES = 4 << 20  # a copybook is text a person wrote: megabytes, not gigabytes


def parse_copybook_file(path: Path, library: Sequence[Path] = ()) -> dict[str, Record]:
    return parse_copybook(read_copybook_text(path), str(path), library)


def read_copybook_text(path: Path) -> str:
    """The text of a copybook file (CopybookError for a directory, a huge or binary file)."""
    try:
        if path.is_dir():
            raise CopybookError(f"copybook {path} is a directory, not a file")
        if path.stat().st_size > MAX_COPYBOOK_BYTES:
            raise CopybookError(f"copybook {path} is {path.stat().st_size:,} bytes: more than "
                                f"{MAX_COPYBOOK_BYTES:,}, not a copybook")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CopybookError(f"copybook {path} cannot be read: {exc}") from None


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
        size = _layout(top, 0, "", items, source)
        records[top.name] = Record(top.name, size, tuple(items), top.line, source.origins)
    if not records:
        raise CopybookError(f"{source}: no 01-level record found")
    return records


MAX_COPY_DEPTH = 8  # members that COPY members: a loop is refused, not followed
_COPY = re.compile(r"\s*COPY\s+(?:'([^']+)'|\"([^\"]+)\"|([A-Z0-9$#@_-]+))\s*\.\s*", re.I)
_MEMBER_NAMES = ("{}", "{}.cpy", "{}.CPY", "{}.cbl", "{}.cob", "{}.copy")


class Source:
    """Where each code line of a copybook comes from: the copybook's own lines keep their
    numbers, lines of COPY members get numbers past any a copybook can have."""

    def __init__(self, name: str, library: Sequence[Path] = ()) -> None:
        self.name, self.library = name, tuple(library)
        self.origins: dict[int, str] = {}

    def at(self, line: int) -> str:
        return self.origins.get(line, f"{self.name} line {line}")

    def lines(self, text: str) -> list[tuple[int, str]]:
        """The code lines of the copybook, each ``COPY member.`` replaced by the member's."""
        return self._resolve(_code_lines(text, self.name), ())

    def _resolve(self, lines: list[tuple[int, str]],
                 chain: tuple[str, ...]) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for number, code in lines:
            if not re.match(r"\s*COPY(\s|$)", code, re.I):
                out.append((number, code))
                continue
            member = _COPY.fullmatch(code)
            if member is None:
                raise CopybookError(f"{self.at(number)}: only a plain 'COPY member.' is "
                                    "supported (no REPLACING, OF or IN; on a line of its own)")
            name = next(g for g in member.groups() if g)
            out.extend(self._member(name, self.at(number), chain))
        return out

    def _member(self, member: str, where: str, chain: tuple[str, ...]) -> list[tuple[int, str]]:
        chain = (*chain, member.upper())
        if len(set(chain)) < len(chain) or len(chain) > MAX_COPY_DEPTH:
            raise CopybookError(f"{where}: COPY {member} copies itself or nests more than "
                                f"{MAX_COPY_DEPTH} deep ({' -> '.join(chain)})")
        path = self._find(member, where)
        first = max([*self.origins, _MEMBER_LINES]) + 1
        numbered = []
        for k, (number, code) in enumerate(_code_lines(read_copybook_text(path), str(path))):
            self.origins[first + k] = f"{path} line {number} (COPY {member} at {where})"
            numbered.append((first + k, code))
        return self._resolve(numbered, chain)

    def _find(self, member: str, where: str) -> Path:
        for folder in self.library:
            for pattern in _MEMBER_NAMES:
                for name in dict.fromkeys((member, member.lower(), member.upper())):
                    if (folder / pattern.format(name)).is_file():
                        return folder / pattern.format(name)
        folders = ", ".join(str(f) for f in self.library) or "none"
        raise CopybookError(f"{where}: COPY {member}: no such member in the copybook library "
                            f"(copybook.library: {folders})")


_MEMBER_LINES = 1 << 23  # past the lines of any copybook (MAX_COPYBOOK_BYTES)


def _code_lines(text: str, name: str) -> list[tuple[int, str]]:
    """(line number, code) with the sequence area, comments and columns 73-80 removed.

    Fixed format puts code in columns 8-72 and an identification (a program name, a
    sequence number) in 73-80, which the compiler ignores; a word that runs from column 72
    into 73 was cut there by mistake and is refused, never read half. A '-' in column 7
    continues the previous line's last word or literal (joined like the compiler does).
    """
    lines = text.splitlines()
    # fixed format: columns 1-6 blank or one sequence token (000100, CB0010), an indicator
    # in column 7; anything else is free format
    fixed = all(" " not in ln.strip() if len(ln) < 7 else
                (ln[:6].strip() == "" or " " not in ln[:6]) and ln[6] in " *-/dD"
                for ln in lines if ln.strip())
    out: list[tuple[int, str]] = []
    for number, ln in enumerate(lines, 1):
        if fixed:
            if len(ln) < 7 or ln[6] in "*/dD":
                continue
            _check_columns(ln, f"{name} line {number}")
            if ln[6] == "-":
                _continue(out, ln[7:72], f"{name} line {number}")
                continue
            ln = ln[7:72]
        ln = ln.split("*>", 1)[0]
        if ln.lstrip().startswith("*"):
            continue
        out.append((number, ln))
    return out


def _check_columns(ln: str, where: str) -> None:
    if len(ln) > 72 and ln[71] not in " ." and ln[72] != " ":
        word = ln[7:72].split()[-1] + ln[72:].split()[0]
        raise CopybookError(f"{where}: {word!r} runs past column 72, where the code area "
                            "ends (columns 73-80 are an identification the compiler ignores): "
                            "move it to the next line")


def _continue(out: list[tuple[int, str]], code: str, where: str) -> None:
    """Join a continuation line (column 7 '-') to the line before it."""
    if not out or not code.strip():
        raise CopybookError(f"{where}: a continuation line ('-' in column 7) continues nothing")
    number, prev = out[-1]
    rest = code.lstrip()
    if prev.count("'") % 2 or prev.count('"') % 2:
        # an open literal runs to column 72, and goes on after the continuation's quote
        if rest[:1] not in ("'", '"'):
            raise CopybookError(f"{where}: a continued literal must go on after a quote")
        joined = prev.ljust(65) + rest[1:]
    else:
        joined = prev.rstrip() + rest
    out[-1] = (number, joined)


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
            entry.occurs = _occurs(words[i] if i < len(words) else "", where)
            if i + 2 < len(words) and words[i + 1].upper() == "TO":
                raise CopybookError(f"{where}: {_REFUSED['DEPENDING']}")
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


def _layout(e: _Entry, offset: int, suffix: str, out: list[Item], source: Source,
            usage: Usage | None = None, sign: tuple[bool | None, bool] = (None, False)) -> int:
    """Append the items of ``e`` (all its occurrences) at ``offset``; return its size."""
    usage, sign = _inherit(e, usage, sign)
    one = _size_of(e, source, usage, sign)
    for k in range(e.occurs):
        sfx = f"{suffix}_{k + 1}" if e.occurs > 1 else suffix
        start = offset + k * one
        if e.children:
            pos = start
            for child in e.children:
                if child.redefines:
                    continue  # an alternative view of bytes already described
                pos += _layout(child, pos, sfx, out, source, usage, sign)
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
