"""How close a plan runs to the machine's float32 arithmetic, for the tuner.

The yardstick is a model's multiply-adds on one image (its convolutions and matrix
products, counted as they run: the model is not trusted to describe itself) at the faster of
the rates a 512x512 matmul and a 3x3 convolution reach. One is not enough: on an AMD Zen 5
host MKL's matmul runs at 110 GFLOP/s a core and oneDNN's convolutions at 230. A heavy model
whose best plan runs near that rate (a ResNet of several GFLOP an image) gains little from
another variant doing the same arithmetic, while each one costs it seconds to time. It is a
yardstick, not a strict bound: Winograd convolutions do fewer multiplications than counted
(BENCHMARKS.md, the native plan).

Whether they do it faster is the machine's: NNPACK's Winograd kernels beat oneDNN on a 3x3
layer by 1.5x on an AVX2 host and lose by 2x on an AVX-512 one, which NNPACK has no kernels
for. `native_gain` measures it once per process, on one such layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# batch, channels, size: the native gain's layer at a quarter of its batch, whose output is
# faulted in afresh each call where freed memory is returned (the fork server): at batch 16
# that alone read the rate at half (124-135 against 244-249 GFLOP/s on a Zen 5 core).
_PEAK_LAYER = (4, 64, 48)
_peaks: dict[int, float] = {}
# batch, channels, size: a 3x3 layer of a ResNet's middle, where NNPACK wins 1.5x on AVX2.
_GAIN_LAYER = (16, 64, 48)
_gains: dict[int, float] = {}


@dataclass(frozen=True)
class Arithmetic:
    flops: float  # multiply-adds x 2, an image
    spatial_share: float  # the share of them in convolutions with kernels larger than 1x1
    # The share in matrix-vector products: ops using each weight once an image (a
    # fully-connected layer on a flat image), whose calls cost the reading of their weights.
    matvec_share: float = 0.0


class _FlopCount(TorchDispatchMode):
    def __init__(self, images: int) -> None:
        super().__init__()
        self.images = max(1, images)
        self.flops = 0
        self.spatial = 0
        self.matvec = 0

    def _count(self, flops: int, out: torch.Tensor, columns: int) -> None:
        """`columns`: the outputs computed by one use of the weight. An op with no more outputs
        than that per image used each weight once per image."""
        self.flops += flops
        if out.numel() <= columns * self.images:
            self.matvec += flops

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if isinstance(out, torch.Tensor):
            if packet in _WEIGHTED and args[1].dim() >= 2:
                flops = 2 * out.numel() * args[1][0].numel()
                self._count(flops, out, args[1].shape[0])
                if args[1].dim() > 2 and args[1][0, 0].numel() > 1:
                    self.spatial += flops
            elif packet in _CONTRACTING:
                self._count(2 * out.numel() * args[0].shape[-1], out, args[1].shape[-1])
            elif packet in _ADDED:
                self._count(2 * out.numel() * args[1].shape[-1], out, args[2].shape[-1])
        return out


def count_arithmetic(forward: Any, x: torch.Tensor) -> Arithmetic | None:
    """The arithmetic of one forward pass on `x`, an image's worth, or None if the pass fails
    or does none (a model may do anything; the yardstick is then unknown, not an error)."""
    try:
        with _FlopCount(len(x)) as count:
            forward(x)
    except Exception:
        return None
    if not count.flops:
        return None
    return Arithmetic(
        count.flops / max(1, len(x)), count.spatial / count.flops, count.matvec / count.flops
    )


@contextmanager
def onednn_off() -> Iterator[None]:
    """PyTorch's own convolutions instead of oneDNN's (NNPACK's at batch 16 and more). The
    switch is process-wide. Not torch.backends.mkldnn.flags(): it also resets the TF32
    switch, with a warning."""
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


def _best_s(run: Callable[[], object], threads: int, timed: int) -> float:
    """The fastest of `timed` calls on `threads` threads, after one that warms the caches and
    the thread pool; the thread count is left as it was."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = float("inf")
    try:
        for attempt in range(timed + 1):
            started = time.perf_counter()
            run()
            if attempt:
                best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return best


def peak_flops(threads: int) -> float:
    """Float32 FLOP/s on `threads` threads: the faster of a matmul and a 3x3 convolution,
    measured once per process (~20 ms)."""
    if threads not in _peaks:
        a, b = torch.rand(_PEAK_SIZE, _PEAK_SIZE), torch.rand(_PEAK_SIZE, _PEAK_SIZE)
        matmul = 2 * _PEAK_SIZE**3 / _best_s(lambda: a @ b, threads, timed=5)
        batch, channels, size = _PEAK_LAYER
        x, w = torch.rand(batch, channels, size, size), torch.rand(channels, channels, 3, 3)
        with torch.inference_mode():
            seconds = _best_s(lambda: torch.nn.functional.conv2d(x, w, padding=1), threads, 5)
        convolution = 2 * 9 * channels**2 * size**2 * batch / seconds
        _peaks[threads] = max(matmul, convolution)
    return _peaks[threads]


def native_gain(threads: int) -> float:
    """How many times faster PyTorch's own convolution runs a 64-channel 3x3 layer at 48x48,
    batch 16, than oneDNN does, on `threads` threads; measured once per process (~0.2 s)."""
    if threads not in _gains:
        batch, channels, size = _GAIN_LAYER
        x = torch.rand(batch, channels, size, size)
        w = torch.rand(channels, channels, 3, 3)

        def layer() -> object:
            return torch.nn.functional.conv2d(x, w, padding=1)

        with torch.inference_mode():
            onednn = _best_s(layer, threads, timed=2)
            with onednn_off():
                own = _best_s(layer, threads, timed=2)
        _gains[threads] = onednn / own
    return _gains[threads]
