"""The processor: parse and validate one byte range, send accepted rows to the writers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pipeline.config import JobConfig
from pipeline.db.bulk import Encoded, StagingBatch
from pipeline.db.digests import total
from pipeline.layouts.detail_types import Typed
from pipeline.layouts.fixed import DetailBatch
from pipeline.metrics.bus import WorkerType
from pipeline.repeats import HashSpill, buckets_for
from pipeline.source import ByteRange, RangeDigest, reading_range
from pipeline.workers.context import WorkerContext, worker_main


def run_processor(ctx: WorkerContext, worker_id: int, rng: ByteRange) -> None:
    worker_main(ctx, worker_id, lambda: _process(ctx, worker_id, rng))


def _process(ctx: WorkerContext, worker_id: int, rng: ByteRange) -> None:
    ctx.bus.register(worker_id, WorkerType.PROCESSOR)
    with open(ctx.reject_path(worker_id), "w", encoding="ascii") as rejects, \
            reading_range(ctx.plan, rng) as reading:
        # the bytes parsed are checksummed as they are read, and checked against the plan's
        # CRC-32 of the range once it is done: a changed file fails the run (InputChanged)
        path = reading.path if reading else ctx.plan.path
        digest = reading.digest if reading else None
        if ctx.config.details:
            _process_types(ctx, worker_id, rng, path, digest, rejects)
            return
        with key_spill(ctx, worker_id) as keys:
            _process_one(ctx, worker_id, rng, path, digest, rejects, keys)


def _process_one(ctx: WorkerContext, worker_id: int, rng: ByteRange, path: Path, digest: Any,
                 rejects: TextIO, keys: HashSpill) -> None:
    accepted_amount = read_amount = rows_digest = values_digest = hash_read = 0
    hash_accepted = 0
    # a hash total's sums are kept to the trailer field's digits, as the sender's are
    reduce = ctx.config.hash_total.reduce if ctx.config.hash_total else (lambda total: 0)
    for batch in detail_batches_of(ctx.config, path, rng, ctx.batch_size, digest):
        write_rejects(rejects, batch)
        if batch.accepted:
            sent = _send(ctx, worker_id, batch, 0)
            keys.add(batch.columns, batch.lines, sent.value_digests)
            rows_digest += total(sent.row_digests)
            values_digest += total(sent.value_digests)
        accepted_amount += batch.accepted_amount
        read_amount += batch.read_amount
        hash_read = reduce(hash_read + batch.hash_read)
        hash_accepted = reduce(hash_accepted + batch.hash_accepted)
        # the bus is updated once per batch, after the batch is on its way
        ctx.bus.add_batch(worker_id, batch.records_read, len(batch.rejects),
                          accepted_amount, read_amount, batch.unreadable_amounts,
                          len(batch.misplaced), digest_total_so_far=rows_digest,
                          hashes_so_far=(hash_read, hash_accepted),
                          unhashed=batch.unhashed, value_digest_so_far=values_digest)


def _send(ctx: WorkerContext, worker_id: int, batch: DetailBatch,
          detail_type: int) -> Encoded:
    """Encode the batch's accepted rows for their staging table and queue them for the
    writers; what was sent, with the rows' digests and value digests, which prove column
    by column what staging, then FINAL, must hold."""
    staged = StagingBatch(ctx.run_id, worker_id, batch.lines, batch.columns)
    encoded = ctx.loader_of(detail_type).encode_digested(staged)
    ctx.put(worker_id, (worker_id, batch.accepted, batch.accepted_amount, encoded.payload,
                        detail_type))
    return encoded


def _process_types(ctx: WorkerContext, worker_id: int, rng: ByteRange, path: Path,
                   digest: Any, rejects: TextIO) -> None:
    """[[details]]: each type's rows go to its own staging table and are counted on its
    own bus (this worker's row); the job's bus gets the whole range's figures, the
    unknown types' rejects included. No key spill: each type's MERGE ranks its keys."""
    # per type: accepted amount, read amount, row and value digests so far (exact ints)
    sums = [[0, 0, 0, 0] for _ in ctx.types]
    accepted_amount = read_amount = 0
    for whole, parts in typed_batches_of(ctx.config, path, rng, ctx.batch_size, digest):
        write_rejects(rejects, whole)
        for t, part in enumerate(parts):
            if part is None:
                continue
            running = sums[t]
            if part.accepted:
                sent = _send(ctx, worker_id, part, t)
                running[2] += total(sent.row_digests)
                running[3] += total(sent.value_digests)
            running[0] += part.accepted_amount
            running[1] += part.read_amount
            ctx.types[t].bus.add_batch(worker_id, part.records_read, len(part.rejects),
                                       running[0], running[1], part.unreadable_amounts,
                                       digest_total_so_far=running[2],
                                       value_digest_so_far=running[3])
        accepted_amount += whole.accepted_amount
        read_amount += whole.read_amount
        ctx.bus.add_batch(worker_id, whole.records_read, len(whole.rejects), accepted_amount,
                          read_amount, whole.unreadable_amounts, len(whole.misplaced))


@contextmanager
def key_spill(ctx: WorkerContext, worker_id: int) -> Iterator[HashSpill]:
    """The key hashes of the accepted records, spilled for the parent's repeat check
    (pipeline.repeats): one MERGE per run, de-duplicating only when a key repeats."""
    spill = HashSpill(ctx.run_dir, worker_id, ctx.config.key_columns,
                      buckets_for(ctx.plan.detail_lines), ctx.config.amount,
                      _hashed(ctx.config))
    try:
        yield spill
    finally:
        spill.close()


def typed_batches_of(config: JobConfig, path: Path, rng: ByteRange, batch_size: int,
                     digest: RangeDigest | None = None) -> Iterator[Typed]:
    """Per batch, its whole figures and each [[details]] type's batch (also `validate`'s)."""
    return config.input_format.read_typed(path, rng, batch_size, config.amount,
                                          _hashed(config), digest)


def detail_batches_of(config: JobConfig, path: Path, rng: ByteRange, batch_size: int,
                      digest: RangeDigest | None = None) -> Iterator[DetailBatch]:
    """The detail batches of the range, whatever the input format."""
    return config.input_format.read(path, rng, batch_size, config.amount, _hashed(config),
                                    digest)


def _hashed(config: JobConfig) -> str | None:
    """The detail field a trailer hash total sums, if the job has one."""
    return config.hash_total.of if config.hash_total else None


# one reject per line of the reject file, whatever bytes the record held: every byte
# outside printable ASCII (tab, CR, NUL, 0x80+ ...) and the backslash itself are escaped
_ESCAPES = {b: f"\\x{b:02x}" for b in range(256) if not 0x20 <= b <= 0x7E} | {0x5C: "\\\\"}


def write_rejects(out: TextIO, batch: DetailBatch) -> None:
    for r in batch.rejects:
        out.write(f"{r.line}\t{r.reason}\t{r.raw.decode('latin-1').translate(_ESCAPES)}\n")
    for line in batch.misplaced:
        out.write(f"{line}\tcontrol record (header or trailer) inside the details\t\n")
