"""The reference's batch-1 calls with TorchScript's graph optimisations on and off.

    python benchmarks/bench_reference.py [--models a,b,...] [--rounds 3] [--calls 8]

A grading's reference (and an upload's pre-flight) runs the plain module on a few images at
batch 1. TorchScript's profiling executor spends the first calls of a fresh process profiling
and then optimising the graph; for a handful of calls that can cost more than the forward
passes. For each zoo model, each round runs the calls in a fresh process once with the
optimisations on (TorchScript's default) and once off (what the engine does), alternating which
goes first, and prints the median time of each, their ratio and the largest difference between
the two outputs (0 when the predictions are bit-identical).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.zoo import ZOO, export  # noqa: E402

DEFAULT_MODELS = "tiny_cnn,mlp_sigmoid,lenet,relu_cnn,residual_small,batch1_only"

# Runs in a fresh interpreter so that each measurement sees a graph TorchScript has not profiled.
_CHILD = r"""
import json, sys, time, torch
path, optimised, calls, out = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
model = torch.jit.load(path).eval()
x = torch.rand(calls, 1, 96, 96, generator=torch.Generator().manual_seed(0))
with torch.inference_mode(), torch.jit.optimized_execution(optimised):
    t0 = time.perf_counter()
    y = torch.cat([model(x[i : i + 1]).reshape(1, -1) for i in range(calls)])
    seconds = time.perf_counter() - t0
torch.save(y, out)
print(json.dumps({"s": seconds}))
"""


def _run(path: Path, optimised: bool, calls: int, out: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), "1" if optimised else "0", str(calls), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=8)
    args = parser.parse_args()

    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in ZOO]
    if unknown:
        parser.error(f"not in the zoo: {', '.join(unknown)}")
    print(f"{'model':<20} {'on ms':>8} {'off ms':>8} {'on/off':>7} {'max diff':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = export(name, Path(tmp) / f"{name}.pt")
            on_out, off_out = Path(tmp) / "on.pt", Path(tmp) / "off.pt"
            on, off = [], []
            for r in range(args.rounds):
                order = (True, False) if r % 2 == 0 else (False, True)
                for optimised in order:
                    seconds = _run(path, optimised, args.calls, on_out if optimised else off_out)
                    (on if optimised else off).append(seconds)
            diff = float((torch.load(on_out) - torch.load(off_out)).abs().max())
            m_on, m_off = statistics.median(on) * 1e3, statistics.median(off) * 1e3
            print(f"{name:<20} {m_on:8.1f} {m_off:8.1f} {m_on / m_off:7.2f} {diff:9.2g}")


if __name__ == "__main__":
    main()
