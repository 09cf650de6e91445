"""The audit's conversions: amounts at ``AUDIT_SCALE``, timestamps as naive UTC.

The audit tables themselves (BATCH_RUN, RECON_AUDIT, RECON_WORKER_AUDIT, JOB_LOCK,
RECON_EVIDENCE) are defined beside the job's own in pipeline.db.audit_tables, which creates
them; what is written to them is the audit's (pipeline.audit.runs, pipeline.audit.writer).
The writer and the reader (pipeline.audit.reader) convert through this module only.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.db.audit_tables import AUDIT_SCALE


def to_audit(minor: int | None, scale: int) -> int | None:
    """An amount in minor units at the job's ``scale``, at the audit's scale (exact)."""
    return None if minor is None else minor * 10 ** (AUDIT_SCALE - scale)


def from_audit(amount: int | None, scale: int) -> int | None:
    """An audit amount back at ``scale`` (<= AUDIT_SCALE); decimals beyond it are cut."""
    return None if amount is None else amount // 10 ** (AUDIT_SCALE - scale)


def utc_now() -> datetime:
    """Naive UTC: TIMESTAMP columns hold UTC on every database."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(moment: datetime | None) -> datetime | None:
    """A moment as a TIMESTAMP column holds it (naive UTC)."""
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def aware_utc(moment: datetime) -> datetime:
    """A TIMESTAMP read back (naive UTC) as an aware UTC moment."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
