"""The one contract every input format keeps: what the job, the processors, `validate`
and `explain` ask of an input, whatever its record format."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pipeline.errors import ConfigError
from pipeline.layouts.detail_types import Typed
from pipeline.layouts.fields import Layout
from pipeline.layouts.fixed import DetailBatch
from pipeline.source import ByteRange, InputPlan, RangeDigest

if TYPE_CHECKING:
    from pipeline.layouts.codepage_check import Reading


class KeysUnreadable(Exception):
    """The keys of records cannot be read back from the input; the message says why."""


class InputFormat(ABC):
    """An input format family, built from the job's config; one object per job.

    ``plan`` checks the control records and cuts the details into byte ranges on record
    boundaries; ``read`` parses one range into DetailBatches (vectorized: a format adds no
    Python work per record); ``read_keys`` gives `explain` the key text of some records.
    """

    sample_suffix: ClassVar[str] = ".dat"
    several_types: ClassVar[bool] = False  # may hold [[details]] record types
    input_keys: ClassVar[frozenset[str]] = frozenset()  # the [input] keys it reads
    copybook_sha256: str | None = None  # of the copybook a binary input is read by

    @classmethod
    @abstractmethod
    def from_config(cls, name: str, data: Mapping[str, Any], source: Path) -> InputFormat:
        """The format of a whole job's TOML (``name``: its input.format); ConfigError if
        the sections do not describe one."""

    @abstractmethod
    def layouts(self) -> tuple[Layout, Layout, Layout]:
        """Header, detail and trailer as the job stores and checks them."""

    @abstractmethod
    def plan(self, path: Path, parts: int) -> InputPlan:
        """Identity, SHA-256, header and trailer values, and ``parts`` ranges of details."""

    @abstractmethod
    def read(self, path: Path, rng: ByteRange, batch_size: int, amount: str,
             hash_of: str | None = None, digest: RangeDigest | None = None
             ) -> Iterator[DetailBatch]:
        """The detail batches of a planned range (``digest``: fed every byte read)."""

    def read_typed(self, path: Path, rng: ByteRange, batch_size: int, amount: str,
                   hash_of: str | None = None, digest: RangeDigest | None = None
                   ) -> Iterator[Typed]:
        """Each batch with its part per [[details]] record type (none for one type)."""
        batches = self.read(path, rng, batch_size, amount, hash_of, digest)
        return ((batch, ()) for batch in batches)

    @abstractmethod
    def read_keys(self, path: Path, sha256: str, lines: np.ndarray,
                  key_columns: Sequence[str]) -> dict[int, str]:
        """The key text of the records at ``lines`` of the file that had ``sha256``;
        KeysUnreadable when the format or the file (changed since) cannot give them."""

    @property
    def code_page(self) -> str:
        """The code page the input is read in, recorded in BATCH_RUN."""
        return "ascii"

    def other_readings(self, path: Path, plan: InputPlan) -> list[Reading]:
        """What the text fields would read in other code pages (binary inputs only)."""
        return []

    def with_types(self, types: Sequence[tuple[InputFormat, str]]) -> InputFormat:
        """The input of a [[details]] job: these formats' detail records (with their amount
        fields) told apart by a record-type field."""
        raise ConfigError("[[details]]: only for input.format fb or vb (a copybook job)")

    @property
    def sample_format(self) -> str | None:
        """The `pipeline generate --format` that writes a sample of this input (None:
        none does)."""
        return None


def join_key(values: Sequence[object]) -> str:
    """One key as operators read it: a composite key's columns joined by '|'."""
    return "|".join(str(v).strip() for v in values)
