"""Code pages as 256-entry tables, so a whole (B, n) byte matrix is decoded by indexing.

cp037, cp500, cp1140 and cp273 come from Python's codecs. cp1047 (z/OS Unix, "Open
Systems" Latin-1) is not in the stdlib: it is cp037 with eight code points swapped
(IBM CDRA tables; tests cross-check it against the ``ebcdic`` package).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from pipeline.errors import ConfigError

CODE_PAGES = ("cp037", "cp1140", "cp500", "cp273", "cp1047", "ascii")
_CP1047_FROM_CP037 = {0x15: "\n", 0x25: "\x85", 0x5F: "^", 0xAD: "[", 0xB0: "\xac",
                      0xBA: "\xdd", 0xBB: "\xa8", 0xBD: "]"}


@dataclass(frozen=True)
class CodePage:
    name: str
    chars: str  # the character of each of the 256 byte values ("\ufffd": none)
    codepoints: np.ndarray  # uint32 (256,): decoded text as UCS-4, LOW-VALUES as a space
    printable: np.ndarray  # bool (256,): allowed in a text field (LOW-VALUES included)
    printable_bytes: bytes  # the same, as the bytes bytes.translate may delete
    latin1: bytes  # translate table: byte -> its code point where that is below 256
    wide: bytes  # the bytes whose code point is 256 or more (cp1140's euro sign)
    plus: int  # the bytes of "+" and "-" (SIGN ... SEPARATE)
    minus: int

    def encode(self, text: str) -> bytes:
        return text.encode("ascii").translate(_encode_table(self.name))


@cache
def code_page(name: str) -> CodePage:
    """The table of a supported code page (ConfigError for any other name)."""
    if name not in CODE_PAGES:
        raise ConfigError(f"input.encoding: expected one of {list(CODE_PAGES)}, got {name!r}")
    chars = _chars(name)
    # LOW-VALUES pad text fields of real extracts: decoded as a space, so trimmed like one
    codepoints = np.array([32 if b == 0 else ord(c) for b, c in enumerate(chars)], np.uint32)
    printable = np.array([b == 0 or (c.isprintable() and c != "\ufffd")
                          for b, c in enumerate(chars)], dtype=bool)
    allowed = bytes(b for b in range(256) if printable[b])
    latin1 = bytes(int(c) if c < 256 else 0 for c in codepoints)
    wide = bytes(b for b in range(256) if codepoints[b] >= 256)
    return CodePage(name, chars, codepoints, printable, allowed, latin1, wide,
                    chars.index("+"), chars.index("-"))


def _chars(name: str) -> str:
    if name == "ascii":
        return "".join(chr(b) if b < 128 else "\ufffd" for b in range(256))
    if name == "cp1047":
        base = list(_chars("cp037"))
        for b, c in _CP1047_FROM_CP037.items():
            base[b] = c
        return "".join(base)
    return bytes(range(256)).decode(name)


@cache
def _encode_table(name: str) -> bytes:
    """ASCII byte -> code page byte (for the generator and tests)."""
    chars = _chars(name)
    return bytes(chars.index(chr(b)) if chr(b) in chars else 0x3F for b in range(256))
