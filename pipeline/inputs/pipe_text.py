"""Pipe-delimited text quoted with apostrophes, as database unload tools write it:
``D|C1|'O''Brien | Sons'|RET|1.50|20261124``. The CSV rules (pipeline/layouts/csv.py)
in another dialect: cells split on ``|`` (input.delimiter may name another), a cell
holding the delimiter enclosed in ``'``, a ``'`` inside it doubled."""

from __future__ import annotations

from typing import ClassVar

from pipeline.inputs.csv_text import CsvText


class PipeText(CsvText):
    quote: ClassVar[str] = "'"
    default_delimiter: ClassVar[str] = "|"
