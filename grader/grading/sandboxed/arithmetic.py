"""How close a plan runs to the machine's float32 arithmetic, for the tuner.

The yardstick is a model's multiply-adds on one image (its convolutions and matrix
products, counted as they run: the model is not trusted to describe itself) at the rate a
512x512 matmul reaches. A heavy model whose best plan runs near that rate (a ResNet of
several GFLOP an image) gains little from another variant doing the same arithmetic, while
each one costs it seconds to time. It is a yardstick, not a strict bound: oneDNN's
convolutions reach 80-125 % of the matmul's rate, and Winograd convolutions do fewer
multiplications than counted (BENCHMARKS.md, the native plan).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
# Ops whose second argument is a weight (out_channels or out_features first): each output
# element costs one multiply-add per weight element in its row.
_WEIGHTED = {_aten.conv1d, _aten.conv2d, _aten.conv3d, _aten.convolution, _aten._convolution,
             _aten.linear}
# Ops contracting over their first argument's last dimension.
_CONTRACTING = {_aten.mm, _aten.bmm, _aten.matmul}
_ADDED = {_aten.addmm, _aten.baddbmm}  # the same, after the added term
_PEAK_SIZE = 512
_peaks: dict[int, float] = {}


@dataclass(frozen=True)
class Arithmetic:
    flops: float  # multiply-adds x 2, an image
    spatial_share: float  # the share of them in convolutions with kernels larger than 1x1


class _FlopCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.spatial = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if isinstance(out, torch.Tensor):
            if packet in _WEIGHTED and args[1].dim() >= 2:
                flops = 2 * out.numel() * args[1][0].numel()
                self.flops += flops
                if args[1].dim() > 2 and args[1][0, 0].numel() > 1:
                    self.spatial += flops
            elif packet in _CONTRACTING:
                self.flops += 2 * out.numel() * args[0].shape[-1]
            elif packet in _ADDED:
                self.flops += 2 * out.numel() * args[1].shape[-1]
        return out


def count_arithmetic(forward: Any, x: torch.Tensor) -> Arithmetic | None:
    """The arithmetic of one forward pass on `x`, an image's worth, or None if the pass fails
    or does none (a model may do anything; the yardstick is then unknown, not an error)."""
    try:
        with _FlopCount() as count:
            forward(x)
    except Exception:
        return None
    if not count.flops:
        return None
    return Arithmetic(count.flops / max(1, len(x)), count.spatial / count.flops)


def matmul_peak(threads: int) -> float:
    """FLOP/s of a float32 matmul on `threads` threads, measured once per process."""
    if threads not in _peaks:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        a, b = torch.rand(_PEAK_SIZE, _PEAK_SIZE), torch.rand(_PEAK_SIZE, _PEAK_SIZE)
        best = float("inf")
        try:
            for run in range(6):
                started = time.perf_counter()
                a @ b
                if run:  # the first one warms the caches and the thread pool
                    best = min(best, time.perf_counter() - started)
        finally:
            torch.set_num_threads(previous)
        _peaks[threads] = 2 * _PEAK_SIZE**3 / best
    return _peaks[threads]
