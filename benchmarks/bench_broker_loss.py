"""Broker data loss: how long until already-published tasks are found and graded.

The production layout (an API-only `grader serve`, a separate Redis, a `grader worker`) with
the production defaults (sweeper every 30 s, GRADER_QUEUED_CHECK_AFTER_S=60): N uploads are
accepted and published, Redis dies without saving and restarts empty (as with
`redis-cli shutdown nosave`), then a worker starts. Prints the seconds from the restart until
the sweeper has re-sent every task, and until all are graded, and checks each ran once.

    python benchmarks/bench_broker_loss.py [--uploads 30] [--check-after 60] [--interval 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.broker import measure_broker_loss  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--check-after", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=30.0)
    args = parser.parse_args()
    env = {
        "GRADER_QUEUED_CHECK_AFTER_S": str(args.check_after),
        "GRADER_SWEEPER_INTERVAL_S": str(args.interval),
    }
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure_broker_loss(Path(tmp), uploads=args.uploads, env=env, timeout=900)
    finals = figures.pop("finals")
    figures["graded_once"] = all(f["attempts"] == 1 and f["result"] for f in finals)
    figures["statuses"] = sorted({f["status"] for f in finals})
    figures.update(check_after_s=args.check_after, sweeper_interval_s=args.interval)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
