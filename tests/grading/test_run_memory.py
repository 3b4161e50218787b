"""A grading's run keeps none of the model's own outputs. The sandbox child keeps the memory it
frees (heap.py); a kept output, however small, sits among its batch's activations and pins them
apart, so every later batch faulted fresh pages in, and the run slowed as the heap fragmented
(BENCHMARKS.md, "Kept outputs")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.zoo import export

_CHILD = """
import json, resource, sys
from grader.grading.sandboxed.heap import keep_freed_memory
assert keep_freed_memory()  # as the sandbox child does, before torch allocates anything
import numpy as np, torch
from grader.grading.kinds import get_kind
from grader.grading.plans import Plan
from grader.grading.sandboxed.predict import Runner, load_model
from grader.grading.sandboxed.tuner import Prepared

torch.set_num_threads(1)
model = load_model(sys.argv[1], device="cpu")
kind = get_kind("keypoints")
images = np.random.default_rng(0).integers(0, 256, size=(400, 96, 96), dtype=np.uint8)
x = kind.to_input(images)
with torch.inference_mode():
    frozen = torch.jit.freeze(model)
    torch.jit.enable_onednn_fusion(True)
    for _ in range(2):  # the tuner's warm-up: the fused partitions are compiled here
        frozen(x[:8])
    torch.jit.enable_onednn_fusion(False)
    into = torch.empty(len(x), *kind.output_shape)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    done, _ = Runner(model, kind).run_plan(Prepared(Plan("fused", 8, 1), frozen, 1e-3), x, into)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    expected = torch.cat([model(x[i : i + 1]).view(-1, 15, 2) for i in range(len(x))])
print(json.dumps({"done": done, "faults": faults,
                  "max_error": float((into - expected).abs().max())}))
"""


def test_the_run_reuses_its_batches_memory_in_a_child_that_keeps_freed_memory(
    tmp_path: Path,
) -> None:
    path = export("naimish_elu_680", tmp_path / "naimish_elu_680.pt")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], check=True, capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[2], timeout=300,
    )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["done"] == 400
    assert result["max_error"] <= 1e-5
    # A batch's activations are ~2 200 pages here. Kept outputs cost 50 000-100 000 faults
    # over the 50 batches (most batches take fresh pages); copied out, ~4 000 in all.
    assert result["faults"] < 15_000, result
