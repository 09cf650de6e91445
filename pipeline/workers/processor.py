"""The processor: parse and validate one byte range, send accepted rows to the writers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pipeline.config import JobConfig
from pipeline.db.bulk import StagingBatch
from pipeline.db.digests import total
from pipeline.layouts.csv import CsvLayout, parse_csv_details
from pipeline.layouts.fixed import DetailBatch, Reject, parse_details
from pipeline.layouts.mainframe_input import detail_batches
from pipeline.metrics.bus import WorkerType
from pipeline.repeats import HashSpill, buckets_for
from pipeline.source import ByteRange, LineChunk, read_lines, reading_range
from pipeline.workers.context import WorkerContext, worker_main


def run_processor(ctx: WorkerContext, worker_id: int, rng: ByteRange) -> None:
    worker_main(ctx, worker_id, lambda: _process(ctx, worker_id, rng))


def _process(ctx: WorkerContext, worker_id: int, rng: ByteRange) -> None:
    ctx.bus.register(worker_id, WorkerType.PROCESSOR)
    accepted_amount = read_amount = rows_digest = hash_read = hash_accepted = 0
    # a hash total's sums are kept to the trailer field's digits, as the sender's are
    reduce = ctx.config.hash_total.reduce if ctx.config.hash_total else (lambda total: 0)
    with open(ctx.reject_path(worker_id), "w", encoding="ascii") as rejects, \
            reading_range(ctx.plan, rng) as reading, key_spill(ctx, worker_id) as keys:
        # the bytes parsed are checksummed as they are read, and checked against the plan's
        # CRC-32 of the range once it is done: a changed file fails the run (InputChanged)
        path = reading.path if reading else ctx.plan.path
        digest = reading.digest if reading else None
        for batch in detail_batches_of(ctx.config, path, rng, ctx.batch_size, digest):
            write_rejects(rejects, batch)
            if batch.accepted:
                keys.add(batch.columns, batch.lines)
                staged = StagingBatch(ctx.run_id, worker_id, batch.lines, batch.columns)
                # the rows' digests prove, column by column, what staging must hold
                payload, digests = ctx.loader.encode_digested(staged)
                rows_digest += total(digests)
                ctx.put(worker_id, (worker_id, batch.accepted, batch.accepted_amount, payload))
            accepted_amount += batch.accepted_amount
            read_amount += batch.read_amount
            hash_read = reduce(hash_read + batch.hash_read)
            hash_accepted = reduce(hash_accepted + batch.hash_accepted)
            # the bus is updated once per batch, after the batch is on its way
            ctx.bus.add_batch(worker_id, batch.records_read, len(batch.rejects),
                              accepted_amount, read_amount, batch.unreadable_amounts,
                              len(batch.misplaced), digest_total_so_far=rows_digest,
                              hashes_so_far=(hash_read, hash_accepted),
                              unhashed=batch.unhashed)


@contextmanager
def key_spill(ctx: WorkerContext, worker_id: int) -> Iterator[HashSpill]:
    """The key hashes of the accepted records, spilled for the parent's repeat check
    (pipeline.repeats): one MERGE per run, de-duplicating only when a key repeats."""
    spill = HashSpill(ctx.run_dir, worker_id, ctx.config.key_columns,
                      buckets_for(ctx.plan.detail_lines))
    try:
        yield spill
    finally:
        spill.close()


def detail_batches_of(config: JobConfig, path: Path, rng: ByteRange, batch_size: int,
                      digest: Any = None) -> Iterator[DetailBatch]:
    """The detail batches of the range, whatever the input format (also `validate`'s)."""
    hash_of = config.hash_total.of if config.hash_total else None
    if config.mainframe is not None:
        yield from detail_batches(config.mainframe, config.amount, path, rng, batch_size,
                                  digest, hash_of)
        return
    parse = _parser(config, hash_of)
    for item in read_lines(path, rng, batch_size, config.detail.length, digest):
        if isinstance(item, LineChunk):
            yield parse(item.data, item.first_line)
        else:
            yield _unreadable(item)


def _parser(config: JobConfig, hash_of: str | None) -> Callable[[bytes, int], DetailBatch]:
    """The detail parser of the input format; both yield the same DetailBatch."""
    layout, amount = config.detail, config.amount
    control = config.header.record_type[:1] + config.trailer.record_type[:1]
    if config.input_format == "csv":
        if not isinstance(layout, CsvLayout):
            raise TypeError("input.format is csv but the detail layout is not a CsvLayout")
        return lambda data, line: parse_csv_details(layout, amount, data, line, control,
                                                    hash_of)
    return lambda data, line: parse_details(layout, amount, data, line, control, hash_of)


def _unreadable(reject: Reject) -> DetailBatch:
    """An over-long line: one record read, rejected, its amount (and hashed field)
    unknowable."""
    return DetailBatch(reject.line, np.empty(0, np.int64), {}, 1, [reject], 0, 0, 1, [],
                       unhashed=1)


# one reject per line of the reject file, whatever bytes the record held: every byte
# outside printable ASCII (tab, CR, NUL, 0x80+ ...) and the backslash itself are escaped
_ESCAPES = {b: f"\\x{b:02x}" for b in range(256) if not 0x20 <= b <= 0x7E} | {0x5C: "\\\\"}


def write_rejects(out: TextIO, batch: DetailBatch) -> None:
    for r in batch.rejects:
        out.write(f"{r.line}\t{r.reason}\t{r.raw.decode('latin-1').translate(_ESCAPES)}\n")
    for line in batch.misplaced:
        out.write(f"{line}\tcontrol record (header or trailer) inside the details\t\n")
