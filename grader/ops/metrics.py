"""The Prometheus exposition of grader/ops/service.py, computed at scrape time.

Workers are separate processes, possibly on other machines, so nothing is counted in a
worker's memory: the counters and histograms are derived from the database (every upload and
result is a row there) and the live workers from their heartbeats in the broker. Any API
process therefore gives the same figures; scrape one of them (docs/service.md, "Metrics").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from grader.config import Settings
from grader.db import session_scope
from grader.ops import service

# A scrape reads a few aggregates over the submissions table; several scrapers (or a reload
# of the System page) within this window share one reading.
CACHE_S = 2.0


class GraderCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        with session_scope(self.settings.sqlalchemy_url, write=False) as session:
            uploads = service.uploads_by_queue(session)
            preflights = service.preflight_outcomes(session)
            gradings = service.grading_outcomes(session)
            histograms = service.duration_histograms(session)
            queues = service.queues(session, self.settings)
        workers = service.workers(self.settings)

        m = CounterMetricFamily(
            "grader_uploads", "Accepted uploads (submissions created).", labels=["queue"]
        )
        for queue, n in sorted(uploads.items()):
            m.add_metric([queue], n)
        yield m

        m = CounterMetricFamily(
            "grader_preflight_outcomes",
            "Finished pre-flight checks by status (PASSED, SKIPPED, FAILED) and failure kind.",
            labels=["status", "failure"],
        )
        for o in preflights:
            m.add_metric([o.status, o.failure], o.count)
        yield m

        m = CounterMetricFamily(
            "grader_grading_outcomes",
            "Ended gradings by status (PASSED, FAILED, ERROR) and failure kind.",
            labels=["status", "failure"],
        )
        for o in gradings:
            m.add_metric([o.status, o.failure], o.count)
        yield m

        h = HistogramMetricFamily(
            "grader_grading_duration_seconds",
            "Seconds the engine spent on one grading (load, plan, predict, score), per queue.",
            labels=["queue"],
        )
        for hist in histograms:
            h.add_metric([hist.queue], hist.buckets, hist.sum_s)
        yield h

        depth = GaugeMetricFamily(
            "grader_queue_depth", "Submissions waiting to be graded.", labels=["queue"]
        )
        running = GaugeMetricFamily(
            "grader_queue_running", "Submissions being graded.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "grader_queue_oldest_age_seconds",
            "Age of the oldest waiting submission (0 when none waits).",
            labels=["queue"],
        )
        live = GaugeMetricFamily(
            "grader_workers", "Live workers (unexpired heartbeat) serving the queue.",
            labels=["queue"],
        )
        slots = GaugeMetricFamily(
            "grader_worker_slots", "Grading processes of the live workers serving the queue.",
            labels=["queue"],
        )
        for q in queues:
            depth.add_metric([q.name], q.depth)
            running.add_metric([q.name], q.running)
            oldest.add_metric([q.name], q.oldest_age_s or 0.0)
            live.add_metric([q.name], q.workers)
            slots.add_metric([q.name], q.slots)
        yield from (depth, running, oldest, live, slots)

        total = GaugeMetricFamily("grader_workers_live", "Live worker processes (all queues).")
        total.add_metric([], len(workers))
        yield total

        layers = GaugeMetricFamily(
            "grader_worker_sandbox_layer",
            "1 when the sandbox layer is active on that worker, 0 when it is off.",
            labels=["host", "pid", "worker", "layer"],
        )
        beat_age = GaugeMetricFamily(
            "grader_worker_heartbeat_age_seconds", "Seconds since the worker's last heartbeat.",
            labels=["host", "pid", "worker"],
        )
        for w in workers:
            ids = [w.beat.host, str(w.beat.pid), w.beat.name]
            beat_age.add_metric(ids, w.age_s)
            for layer, on in sorted(w.beat.layers.items()):
                layers.add_metric([*ids, layer], 1.0 if on else 0.0)
        yield from (layers, beat_age)


class MetricsEndpoint:
    """One registry per app, and its rendering cached for CACHE_S."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GraderCollector(settings))
        self._lock = threading.Lock()
        self._body = b""
        self._at = -1e9

    def render(self) -> bytes:
        with self._lock:
            if time.monotonic() - self._at >= CACHE_S:
                self._body = generate_latest(self.registry)
                self._at = time.monotonic()
            return self._body
