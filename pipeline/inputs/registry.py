"""input.format names and the classes that read them: a new format is one line here."""

from __future__ import annotations

from pipeline.errors import ConfigError
from pipeline.inputs.contract import InputFormat
from pipeline.inputs.csv_text import CsvText
from pipeline.inputs.fixed_text import FixedWidthText
from pipeline.inputs.mainframe import MainframeInput
from pipeline.inputs.pipe_text import PipeText

FORMATS: dict[str, type[InputFormat]] = {
    "fixed": FixedWidthText,
    "csv": CsvText,
    "fb": MainframeInput,
    "vb": MainframeInput,
    "psv": PipeText,
}


def format_class(name: str) -> type[InputFormat]:
    """The class of input.format ``name``; ConfigError naming the formats there are."""
    if name not in FORMATS:
        names = [f'"{n}"' for n in FORMATS]
        raise ConfigError(f"input.format: expected {', '.join(names[:-1])} or {names[-1]}, "
                          f"got {name!r}")
    return FORMATS[name]


def input_keys() -> set[str]:
    """The [input] keys some format reads (each format refuses those it does not)."""
    return {"format", "path"}.union(*(cls.input_keys for cls in FORMATS.values()))
