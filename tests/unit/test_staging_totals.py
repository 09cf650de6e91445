"""StagingTotals' thread against a store that tells when its connection closes: a pass
left while the thread closes its connection must not cancel it (a closed sqlite3
connection refuses interrupt() with an error, which once ended a run with a traceback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pipeline.db.repositories import Totals
from pipeline.staging_totals import StagingTotals

pytestmark = pytest.mark.timeout(30)


class ClosingStore:
    """The pass sums at once; closing its connection waits for ``may_close``."""

    def __init__(self) -> None:
        self.closing = threading.Event()
        self.may_close = threading.Event()
        self.open = False
        self.cancelled_open: list[bool] = []

    @contextmanager
    def reading(self) -> Iterator[Any]:
        self.open = True
        yield self
        self.closing.set()
        assert self.may_close.wait(timeout=20)
        self.open = False

    def cancel(self, conn: Any) -> None:
        self.cancelled_open.append(self.open)

    def staging(self, conn: Any) -> Any:
        return self

    def count_and_amount(self, run_id: str, digest: bool = False) -> Totals:
        return Totals(3, 300, digest=42)


def test_leaving_while_the_thread_closes_its_connection_cancels_nothing() -> None:
    store = ClosingStore()
    beside = StagingTotals(store, "run-1")  # type: ignore[arg-type]
    # lets the thread finish closing once the block is left (leaving waits for the
    # thread); whenever it fires, nothing may have been cancelled
    release = threading.Timer(0.2, store.may_close.set)
    with beside:
        assert store.closing.wait(timeout=20)  # the pass is over, its connection closing
        release.start()
    assert store.cancelled_open == []
    assert beside.result() == Totals(3, 300, digest=42)
