"""The metrics bus (shared-memory counters per worker) and its aggregator."""

from pipeline.metrics.aggregator import AggregatedMetrics, MetricsAggregator, WorkerMetrics
from pipeline.metrics.bus import (
    BusClosedError,
    Col,
    MetricsBus,
    State,
    WorkerType,
    leaked_segments,
)

__all__ = [
    "AggregatedMetrics",
    "BusClosedError",
    "Col",
    "MetricsAggregator",
    "MetricsBus",
    "State",
    "WorkerMetrics",
    "WorkerType",
    "leaked_segments",
]
