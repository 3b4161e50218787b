"""The native plan (oneDNN off: NNPACK's Winograd convolutions at batch 16) against fused and
optimized, per zoo model, side by side in one process, with each model's share of the peak.

    python benchmarks/bench_native.py [--models a,b,...] [--threads 1] [--repeat 3]
    python benchmarks/bench_native.py --layers   # single convolutions, oneDNN against NNPACK

For each model: ms an image of fused@8, optimized@8 and native@16 (best of --repeat timed
calls after two warm-up calls, on 32 random images), its arithmetic at the measured matmul's
rate ("bound"), the share of that rate the best of fused and optimized reaches and the share
of the arithmetic in convolutions larger than 1x1 (what the tuner reads before it tries the
native plan), native's speed-up over that best, and whether native agrees with the plain
module at batch 1 (1e-5, the tuner's rule). The process keeps the memory it frees, as the
sandbox child does (heap.py): otherwise a layer's large output is mapped and faulted in afresh
on every call, which made oneDNN's 1-channel first layer look 4x slower than it grades.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grader.grading.sandboxed.arithmetic import (  # noqa: E402
    count_arithmetic,
    onednn_off,
    peak_flops,
)
from grader.grading.sandboxed.heap import keep_freed_memory  # noqa: E402
from grader.grading.sandboxed.tuner import Forward, _prepare, agrees  # noqa: E402
from tests.support.zoo import ZOO, build  # noqa: E402

PLANS = (("fused", 8), ("optimized", 8), ("native", 16))
# (in channels, out channels, size, kernel): the layers the zoo's models are made of.
LAYERS = ((1, 32, 96, 3), (32, 32, 96, 3), (32, 64, 48, 3), (64, 64, 48, 3), (64, 128, 24, 3),
          (128, 128, 24, 3), (128, 128, 12, 3), (16, 32, 48, 3), (32, 32, 48, 3),
          (32, 32, 96, 5), (64, 64, 24, 7), (64, 64, 48, 1))


def per_image_ms(forward: Forward, x: torch.Tensor, repeat: int) -> float:
    for _ in range(2):
        forward(x)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        forward(x)
        best = min(best, time.perf_counter() - started)
    return best / len(x) * 1000


def layers(repeat: int) -> None:
    """One convolution at batch 16, with oneDNN and without it (NNPACK), alternated."""
    print(f"{'layer':<24}{'oneDNN ms':>10}{'NNPACK ms':>10}{'ratio':>7}{'oneDNN GFLOP/s':>16}")
    for c_in, c_out, size, k in LAYERS:
        x, w = torch.rand(16, c_in, size, size), torch.rand(c_out, c_in, k, k)
        conv = partial(torch.nn.functional.conv2d, weight=w, padding=k // 2)
        times = [per_image_ms(conv, x, repeat) * len(x)]
        with onednn_off():
            times.append(per_image_ms(conv, x, repeat) * len(x))
        gflop = 2 * c_out * c_in * k * k * size * size * len(x) / 1e9
        print(f"{f'{c_in}->{c_out} {size}x{size} k{k}':<24}{times[0]:>10.2f}{times[1]:>10.2f}"
              f"{times[0] / times[1]:>6.2f}x{gflop / times[0] * 1000:>16.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="", help="comma-separated zoo names (default all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", action="store_true", help="single convolutions instead")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    keep_freed_memory()
    if args.layers:
        torch.set_num_threads(args.threads)
        with torch.inference_mode():
            layers(args.repeat)
        return
    names = [n for n in args.models.split(",") if n] or sorted(ZOO)
    torch.set_num_threads(args.threads)
    peak = peak_flops(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), peak "
          f"{peak / 1e9:.0f} GFLOP/s")
    print(f"{'model':<22}{'MFLOP':>8}{'fused':>8}{'optim':>8}{'native':>8}{'bound':>8}"
          f"{'peak%':>7}{'spatial%':>9}{'native vs best':>16}  agrees")
    x = torch.rand(32, 1, 96, 96)
    for name in names:
        scripted = torch.jit.script(build(name).eval())
        with torch.inference_mode():
            reference = torch.cat([scripted(x[i : i + 1]).reshape(1, -1) for i in range(16)])
            counted = count_arithmetic(scripted, x[:1])
            flops = counted.flops if counted else 0.0
            spatial = counted.spatial_share * 100 if counted else 0.0
            times: dict[str, float] = {}
            agreed = "-"
            for variant, batch in PLANS:
                try:
                    torch.jit.enable_onednn_fusion(variant == "fused")
                    forward = _prepare(torch.jit.script(build(name).eval()), variant)
                    times[variant] = per_image_ms(forward, x[:batch], args.repeat)
                    if variant == "native":
                        out = torch.as_tensor(forward(x[:16])).reshape(16, -1)
                        agreed = "yes" if agrees(out, reference) else "NO"
                except Exception as exc:  # a plan a model cannot take (batch-1-only)
                    times[variant] = float("nan")
                    agreed = agreed if variant != "native" else type(exc).__name__
                finally:
                    torch.jit.enable_onednn_fusion(False)
        best = min(times["fused"], times["optimized"])
        bound = flops / peak * 1000
        share = bound / best * 100 if best == best else float("nan")
        print(f"{name:<22}{flops / 1e6:>8.1f}{times['fused']:>8.2f}{times['optimized']:>8.2f}"
              f"{times['native']:>8.2f}{bound:>8.2f}{share:>6.0f}%{spatial:>8.0f}%"
              f"{best / times['native']:>15.2f}x  {agreed}", flush=True)


if __name__ == "__main__":
    main()
