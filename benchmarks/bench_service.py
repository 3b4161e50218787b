"""Service benchmark against a running embedded server.

(a) overhead: upload -> result committed for a tiny model, minus its engine time (p50/p95);
(b) deadline rush: N uploads from C concurrent clients: API latency p50/p99, errors, time
    until all are graded vs the sum of their engine times.

    python benchmarks/bench_service.py                 # starts its own `grader serve`
    python benchmarks/bench_service.py --same-model    # every upload the same bytes
    python benchmarks/bench_service.py --url http://127.0.0.1:8000 --admin-password P

Each rush upload is a distinct 1.1 MB linear TorchScript model (as when 300 students each
upload their own); --same-model sends one file 300 times (content-addressed storage then
writes it once).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.live_server import LiveServer, start_live_server  # noqa: E402
from tests.support.models import _Linear, write_small_test_set  # noqa: E402

TERMINAL = {"PASSED", "FAILED", "ERROR"}


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


async def rush(
    server: LiveServer, slug: str, tokens: list[str], models: list[bytes], n: int, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    ids: list[int] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(k: int, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {tokens[k % len(tokens)]}"}
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            start = time.perf_counter()
            try:
                response = await client.post(
                    f"/api/v1/exercises/{slug}/submissions",
                    files={"file": ("m.pt", models[i % len(models)])},
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                continue
            latencies.append(time.perf_counter() - start)
            if response.status_code != 202:
                errors.append(f"{response.status_code} {response.text[:100]}")
            else:
                ids.append(int(response.json()["id"]))

    api_pid = server.proc.pid if server.proc is not None else None
    api_cpu0 = process_cpu_s(api_pid) if api_pid else None
    client_cpu0 = time.process_time()
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(client_loop(k, client) for k in range(concurrency)))
        uploads_done = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu0
        api_cpu1 = process_cpu_s(api_pid) if api_pid else None
        pending = set(ids)
        engine_sum = 0.0
        lost = 0
        deadline = time.perf_counter() + 1800
        while pending and time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            done = await _finished(client, slug, server)
            for sid, seconds in done.items():
                if sid in pending:
                    pending.discard(sid)
                    engine_sum += seconds
        lost = len(pending)
    all_graded = time.perf_counter() - started
    return {
        "uploads": n,
        "concurrency": concurrency,
        "errors": len(errors),
        "error_samples": errors[:3],
        "upload_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "upload_p99_ms": 1000 * pct(latencies, 99) if latencies else None,
        "uploads_done_s": uploads_done,
        "api_cpu_ms_per_upload": (
            1000 * (api_cpu1 - api_cpu0) / n
            if api_cpu0 is not None and api_cpu1 is not None
            else None
        ),
        "client_cpu_ms_per_upload": 1000 * client_cpu / n,
        "all_graded_s": all_graded,
        "engine_sum_s": engine_sum,
        "lost": lost,
    }


async def _finished(client: httpx.AsyncClient, slug: str, server: LiveServer) -> dict[int, float]:
    headers = {"Authorization": f"Bearer {server.admin_token()}"}
    out: dict[int, float] = {}
    offset = 0
    while True:
        page = (
            await client.get(
                "/api/v1/submissions",
                params={"exercise": slug, "all_users": "true", "limit": 200, "offset": offset},
                headers=headers,
            )
        ).json()
        for item in page["items"]:
            if item["status"] in TERMINAL and item["result"]:
                out[item["id"]] = item["result"]["seconds"]
        offset += 200
        if offset >= page["total"]:
            return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--admin-password", default=None)
    parser.add_argument("--overhead-n", type=int, default=20)
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--faces", type=int, default=64, help="test-set size for the exercise")
    parser.add_argument(
        "--same-model", action="store_true", help="upload one file every time (deduplicated)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    if args.url:
        server = LiveServer(url=args.url.rstrip("/"), data_dir=work)
        if args.admin_password:
            server.admin_password = args.admin_password
        owned = False
    else:
        server = start_live_server(work / "data")
        owned = True
    try:
        csv_path = write_small_test_set(work / "faces.csv", count=args.faces)
        models = distinct_models(1 if args.same_model else args.overhead_n + args.uploads)
        slug, tokens = setup(server, csv_path, n_students=args.concurrency)
        a = overhead(server, slug, tokens[0], models[-1], args.overhead_n)
        print(
            f"(a) overhead upload->result minus engine, tiny model, {args.faces} faces, "
            f"n={a['n']}: p50 {a['overhead_p50_ms']:.0f} ms, p95 {a['overhead_p95_ms']:.0f} ms "
            f"(engine p50 {a['engine_p50_ms']:.0f} ms, total p50 {a['total_p50_ms']:.0f} ms)"
        )
        b = asyncio.run(
            rush(server, slug, tokens, models[: args.uploads], args.uploads, args.concurrency)
        )
        print(
            f"(b) rush {b['uploads']} uploads / {b['concurrency']} clients: upload p50 "
            f"{b['upload_p50_ms']:.0f} ms, p99 {b['upload_p99_ms']:.0f} ms, errors {b['errors']}, "
            f"lost {b['lost']}; uploads done in {b['uploads_done_s']:.1f} s; all graded after "
            f"{b['all_graded_s']:.1f} s vs engine sum {b['engine_sum_s']:.1f} s "
            f"(ratio {b['all_graded_s'] / max(b['engine_sum_s'], 1e-9):.2f}); "
            f"{len(models[0]) / 1e6:.2f} MB {'same' if args.same_model else 'distinct'} models"
        )
        if b["api_cpu_ms_per_upload"] is not None:
            print(
                f"    CPU per upload during the rush: API process "
                f"{b['api_cpu_ms_per_upload']:.1f} ms, load generator "
                f"{b['client_cpu_ms_per_upload']:.1f} ms"
            )
        if b["error_samples"]:
            print("error samples:", b["error_samples"])
    finally:
        if owned:
            server.stop()


if __name__ == "__main__":
    main()
