"""Freed memory kept or returned: a grading's run time in a fresh process, side by side.

    python benchmarks/bench_heap.py --threads 1 --repeat 2
    python benchmarks/bench_heap.py --against /tmp/before   # a checkout of an earlier commit

A sandbox child is a fresh process, forked from the warmed-up fork server (each process here
runs the same warm-up first): glibc returns each batch's freed activations to the
kernel, and the next batch faults them in again. For each zoo model, the plan is tuned once;
then fresh processes grade the 1000-image demo set with that plan (as a hint: no tuning), with
glibc's defaults and with the child's `keep_freed_memory()`, alternated. Printed per model:
the best run time of each, their ratio, and the minor page faults of the run.

With `--against DIR`, both sides keep freed memory, and the first side runs the grading code
of another checkout (`git worktree add DIR <commit>`): a change to the run, side by side.
With `--tuned` as well, each grading tunes its own plan (no hint), and the time compared is
the reference, the tuning and the run: a change to the tuner, side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = (
    "tiny_cnn,lenet,mlp_wide,naimish_elu_680,naimish_leaky,shared_prelu_strided,"
    "prelu_per_channel,selu_cnn,relu_cnn,bn_cnn_fc1024,kernel7x7,kernel1x1_mix,vgg_small,"
    "depthwise_separable,residual_small"
)

_CHILD = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
mode, path, threads, plan, root = sys.argv[1:6]
threads = int(threads)
sys.path.insert(0, root)
from grader.grading.sandboxed.heap import keep_freed_memory
if mode == "keep":
    assert keep_freed_memory()
import torch
from grader.grading.sandboxed.zygote import _warm_up
_warm_up()  # as the fork server does before any child: each grading starts warm
from grader.config import get_settings
from grader.grading.plans import Plan
from grader.grading.sandboxed.predict import load_model, predict_with_plan
from grader.grading.testdata.demo import demo_test_set_path
from grader.grading.testdata.testsets import load_test_set
torch.set_num_threads(threads)
s = get_settings()
images = load_test_set(demo_test_set_path(s), cache_dir=s.cache_dir).images
hint = Plan.from_dict(json.loads(plan)) if plan else None
try:  # this file's own plan; a tree from before PlanHint takes the plan itself
    from grader.grading.plans import PlanHint
    hint = PlanHint(hint) if hint else None
except ImportError:
    pass
model = load_model(path, device="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
_, report = predict_with_plan(model, images, device="cpu", max_batch=128, threads=threads,
                              hint=hint)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"run_s": report.run_s, "plan": report.plan.to_dict(), "faults": faults,
                  "tuned_s": report.reference_s + report.tuning_s + report.run_s}))
"""


def _grade(
    mode: str, path: Path, threads: int, plan: str, root: Path = ROOT
) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path), str(threads), plan, str(root)],
        check=True, capture_output=True, text=True,
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--against", type=Path, help="an earlier checkout, both sides kept")
    parser.add_argument("--tuned", action="store_true", help="each grading tunes (no hint)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.support.zoo import export

    # (column, glibc mode, checkout): the first side is the baseline.
    sides = [("default", "default", ROOT), ("kept", "keep", ROOT)]
    if args.against is not None:
        sides = [("before", "keep", args.against.resolve()), ("after", "keep", ROOT)]

    key = "tuned_s" if args.tuned else "run_s"
    what = ("reference + tuning + run, each side's own plan" if args.tuned
            else "run = the images after the reference, with the model's tuned plan")
    print(f"{args.threads} thread(s); best of {args.repeat}; {what}")
    print(f"{'model':<22} {'plan':<20} {sides[0][0]:>8} {sides[1][0]:>8} {'ratio':>6}  faults")
    ratios = []
    sums = [0.0, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models.split(",") if m]:
            path = export(name, Path(tmp) / f"{name}.pt")
            plan = "" if args.tuned else json.dumps(
                _grade("default", path, args.threads, "")["plan"]
            )
            runs: list[list[dict[str, object]]] = [[], []]
            for _ in range(args.repeat):
                for side, (_, mode, root) in enumerate(sides):
                    runs[side].append(_grade(mode, path, args.threads, plan, root))
            best = [min(float(str(r[key])) for r in rs) for rs in runs]
            faults = [statistics.median(int(str(r["faults"])) for r in rs) for rs in runs]
            ratio = best[0] / best[1]
            ratios.append(ratio)
            sums[0] += best[0]
            sums[1] += best[1]
            label = " / ".join(sorted({
                f"{p['variant']}@{p['batch_size']}"
                for p in (r["plan"] for rs in runs for r in rs) if isinstance(p, dict)
            }))
            print(f"{name:<22} {label:<20} {best[0]:8.3f} {best[1]:8.3f} "
                  f"{ratio:5.2f}x  {faults[0]:.0f} -> {faults[1]:.0f}", flush=True)
    print(f"runs summed: {sums[0]:.2f} s {sides[0][0]}, {sums[1]:.2f} s {sides[1][0]} "
          f"({sums[0] / sums[1]:.2f}x); ratio min {min(ratios):.2f}x, median "
          f"{statistics.median(ratios):.2f}x, max {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
