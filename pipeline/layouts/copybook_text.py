"""A copybook's text as the compiler sees it: code lines, before any data description.

Fixed format puts a sequence number in columns 1-6, an indicator in column 7 (``*`` or
``/`` a comment, ``-`` a continuation), code in columns 8-72 and an identification in
73-80, which the compiler ignores; free format is code throughout. ``COPY member.``
statements are replaced by the member's lines, read from the copybook library folders,
and every line remembers where it came from, so an error names the member's line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import ConfigError

MAX_COPYBOOK_BYTES = 4 << 20  # a copybook is text a person wrote: megabytes, not gigabytes


class CopybookError(ConfigError):
    """The copybook cannot be read into a record layout (names the line)."""


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


