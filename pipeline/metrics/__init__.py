"""The metrics bus (shared-memory counters per worker) and its aggregator."""

from pipeline.metrics.aggregator import MetricsAggregator
from pipeline.metrics.bus import (
    BusClosedError,
    Col,
    MetricsBus,
    State,
    WorkerType,
    leaked_segments,
)

__all__ = [
    "BusClosedError",
    "Col",
    "MetricsAggregator",
    "MetricsBus",
    "State",
    "WorkerType",
    "leaked_segments",
]
