"""Where one grading's time goes, through the sandbox and in this process, side by side.

    python benchmarks/bench_tuning.py --models relu_cnn,selu_cnn --repeat 3 --threads 1

For each zoo model, `--repeat` gradings through the sandbox (`grade_model_file`, fork server
already up) and as many in this process (`predict_with_plan` on a freshly loaded model, after
the fork server's own warm-up), alternated: per grading the tuning time, the run time (the
images after the reference, with the chosen plan), the plan, and the minor page faults of the
in-process gradings. The tuner's trials are printed with `--trials`. `--plan fused@8` grades
with that plan as the hint (no tuning, no contest), to compare run times alone.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grader.config import get_settings  # noqa: E402
from grader.grading import sandbox  # noqa: E402
from grader.grading.engine import grade_model_file, sandbox_limits  # noqa: E402
from grader.grading.plans import Plan, PlanHint  # noqa: E402
from grader.grading.sandboxed import zygote  # noqa: E402
from grader.grading.sandboxed.predict import load_model, predict_with_plan  # noqa: E402
from grader.grading.testdata.demo import demo_test_set_path  # noqa: E402
from grader.grading.testdata.testsets import load_test_set  # noqa: E402
from tests.support.zoo import export  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="relu_cnn,selu_cnn")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", action="store_true")
    parser.add_argument("--plan", default="", help="variant@batch: grade with this plan")
    args = parser.parse_args()
    hint = None
    if args.plan:
        variant, batch = args.plan.split("@")
        hint = PlanHint(Plan(variant, int(batch), args.threads))
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    settings = get_settings().model_copy(update={"sandbox_threads": args.threads})
    test_set = load_test_set(demo_test_set_path(settings), cache_dir=settings.cache_dir)
    zygote._warm_up()  # what every sandbox child starts from
    sandbox.get_sandbox().probe(limits=sandbox_limits(settings, time_limit_s=None))
    print(f"{len(test_set)} images, {args.threads} thread(s), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models.split(",") if m]:
            path = export(name, Path(tmp) / f"{name}.pt")
            for i in range(args.repeat):
                outcome = grade_model_file(path, test_set, threshold=100.0,
                                           max_model_bytes=20 * 2**20, settings=settings,
                                           plan_hint=hint)
                t = outcome.timings
                plan = outcome.plan.describe() if outcome.plan else outcome.status
                print(f"{name:<16} sandbox    #{i}  tuning {t.get('child_tuning_s', 0):6.3f} s"
                      f"  run {t.get('child_run_s', 0):6.3f} s  {plan}")
                if args.trials:
                    for trial in outcome.trials:
                        print("    ", trial)
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                start = time.perf_counter()
                _, report = predict_with_plan(load_model(path, device="cpu"), test_set.images,
                                              device="cpu", max_batch=128, threads=args.threads,
                                              hint=hint)
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
                print(f"{name:<16} in-process #{i}  tuning {report.tuning_s:6.3f} s  run "
                      f"{report.run_s:6.3f} s  {report.plan.describe()}  ({faults} minor page "
                      f"faults, {time.perf_counter() - start:.2f} s in all)")
                if args.trials:
                    for tr in report.trials:
                        print("    ", tr.to_dict())
    sandbox.shutdown()


if __name__ == "__main__":
    main()
