"""The tuner's yardstick: a model's multiply-adds, counted as it runs, at a measured matmul's
rate. A heavy model's plans carry it, counted inside the confined child, and a plan near it
has a plan doing fewer multiplications tried first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grader.grading.kinds import get_kind
from grader.grading.plans import Plan
from grader.grading.sandbox import SandboxLimits, run_in_sandbox
from grader.grading.sandboxed.arithmetic import (
    Arithmetic,
    count_arithmetic,
    native_gain,
    peak_flops,
)
from grader.grading.sandboxed.predict import Runner, load_model
from grader.grading.sandboxed.tuner import Tuner
from grader.grading.testdata.testsets import TestSet
from tests.support.zoo import build, export, mflop_per_image

from .archs import export as export_arch

# Convolutions (grouped and 1x1 among them), linear heads, residual adds, a (N, 15, 2) output.
COUNTED = ["naimish_elu_680", "depthwise_separable", "residual_small", "mlp_wide",
           "returns_15x2", "kernel1x1_mix"]


@pytest.mark.parametrize("name", COUNTED)
def test_the_count_is_the_architectures_multiply_adds(name: str) -> None:
    module = build(name).eval()
    scripted = torch.jit.script(module)
    x = torch.rand(3, 1, 96, 96)
    with torch.inference_mode():
        one, three = count_arithmetic(scripted, x[:1]), count_arithmetic(scripted, x)
    assert one is not None and three is not None
    expected = mflop_per_image(module) * 1e6
    assert one.flops == pytest.approx(expected, rel=1e-9)
    assert three.flops == pytest.approx(expected, rel=1e-9)  # per image
    assert three.spatial_share == pytest.approx(one.spatial_share)


def test_the_share_in_spatial_kernels() -> None:
    """kernel1x1_mix does 18 % of its arithmetic in 1x1 convolutions (two 32<->64 at 96x96
    against a 64->32 3x3 and a 1->32 3x3); an MLP does none in convolutions."""
    x = torch.rand(1, 1, 96, 96)
    with torch.inference_mode():
        mix = count_arithmetic(torch.jit.script(build("kernel1x1_mix").eval()), x)
        mlp = count_arithmetic(torch.jit.script(build("mlp_wide").eval()), x)
    assert mix is not None and mlp is not None
    spatial_macs = 9216 * (32 * 9 + 32 * 64 * 9)
    assert mix.spatial_share == pytest.approx(2 * spatial_macs / mix.flops, rel=1e-9)
    assert 0.8 < mix.spatial_share < 0.85
    assert mlp.spatial_share == 0


def test_the_share_in_matrix_vector_products() -> None:
    """A fully-connected layer on a flat image uses each weight once an image, at any batch
    size; a CNN's head is the only such part of it, and a convolution never is."""
    x = torch.rand(3, 1, 96, 96)
    with torch.inference_mode():
        mlp = count_arithmetic(torch.jit.script(build("mlp_wide").eval()), x)
        cnn = count_arithmetic(torch.jit.script(build("relu_cnn").eval()), x[:1])
        cnn3 = count_arithmetic(torch.jit.script(build("relu_cnn").eval()), x)
        mix = count_arithmetic(torch.jit.script(build("kernel1x1_mix").eval()), x)
    assert mlp is not None and cnn is not None and cnn3 is not None and mix is not None
    assert mlp.matvec_share == 1.0
    head_macs = 128 * 12 * 12 * 256 + 256 * 30
    assert cnn.matvec_share == pytest.approx(2 * head_macs / cnn.flops, rel=1e-9)
    assert cnn3.matvec_share == pytest.approx(cnn.matvec_share)
    assert mix.matvec_share == pytest.approx(2 * (64 * 36 * 128 + 128 * 30) / mix.flops, rel=1e-9)


def test_a_model_that_raises_is_not_counted() -> None:
    class Refuses(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 0:
                raise RuntimeError("no")
            return x

    assert count_arithmetic(torch.jit.script(Refuses()), torch.rand(1, 1, 96, 96)) is None


def test_the_peak_leaves_the_thread_count_as_it_was() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert peak_flops(2) > 1e8  # any CPU this runs on does 0.1 GFLOP/s
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_native_gain_leaves_onednn_and_the_threads_as_they_were() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gain = native_gain(2)
        assert 0.05 < gain < 20  # the same layer, two kernels: within an order of magnitude
        assert torch.get_num_threads() == 1
        assert torch._C._get_mkldnn_enabled()
        assert native_gain(2) == gain  # measured once
    finally:
        torch.set_num_threads(before)


def _tuned(
    tmp_path: Path, images: np.ndarray, *, threads: int, arithmetic: Arithmetic,
    gain: float = 1.5,
) -> Tuner:
    model = load_model(export("relu_cnn", tmp_path / "relu_cnn.pt"), device="cpu")
    runner = Runner(model, get_kind("keypoints"))
    x = runner.kind.to_input(images)
    with torch.inference_mode():
        reference = runner.batch1(x[:8])
        # 20 ms an image, as a model heavy enough for its bound to be worth measuring.
        tuner = Tuner(
            model, x, reference=reference, reference_s=8 * 0.02, run_batch=runner.run,
            threads=threads,
            max_batch=32, device="cpu", share=1e9, arithmetic=arithmetic, native_gain=gain,
        )
        tuner.tune()
    return tuner


def _tried(tuner: Tuner) -> list[Plan]:
    return [t.plan for t in tuner.trials if t.verdict != "skipped"]


def test_near_the_bound_fewer_multiplications_are_tried_first(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    """Told its plans run at the peak rate, the tuner tries the native convolutions at
    batch 16 right after fusion, on one thread (and that plan gives the course's
    predictions); on two threads, far from that rate, or with much of the arithmetic in 1x1
    convolutions, or on a machine whose own convolutions are no faster than oneDNN's (an
    AVX-512 host), it never tries them."""
    images = small_test_set.images
    heavy = Arithmetic(flops=1e15, spatial_share=1.0)  # an hour an image at any CPU's rate
    near = _tuned(tmp_path, images, threads=1, arithmetic=heavy)
    tried = _tried(near)
    assert tried[:2] == [Plan("fused", 8, 1), Plan("native", 16, 1)], near.trials
    native = next(t for t in near.trials if t.plan == Plan("native", 16, 1))
    assert native.per_image_ms is not None, near.trials  # it agreed, and was timed
    assert Plan("native", 8, 1) not in tried and Plan("native", 1, 1) not in tried
    for tuner in (
        _tuned(tmp_path, images, threads=2, arithmetic=heavy),
        _tuned(tmp_path, images, threads=1, arithmetic=Arithmetic(1.0, 1.0)),
        _tuned(tmp_path, images, threads=1, arithmetic=Arithmetic(1e15, 0.8)),
        _tuned(tmp_path, images, threads=1, arithmetic=heavy, gain=0.55),
    ):
        tried = _tried(tuner)
        assert len(tried) > 2 and all(plan.variant != "native" for plan in tried), tried


def _heavy() -> torch.nn.Module:
    """3x3 convolutions of 64 and 128 channels at full resolution: 5.4 GFLOP an image, near
    any CPU's arithmetic bound however it is run, and over the tuner's 10 ms an image for
    counting even at 500 GFLOP/s on one thread (2 GFLOP ran under it on a Zen 5 host, 21 ms
    on an Emerald Rapids one)."""
    channels = [1, 64, 128, 128, 64]
    layers: list[torch.nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [torch.nn.Conv2d(c_in, c_out, 3, padding=1), torch.nn.ReLU()]
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 30)]
    return torch.nn.Sequential(*layers).eval()


def test_a_heavy_model_is_counted_in_the_confined_child(
    small_test_set: TestSet, tmp_path: Path
) -> None:
    """Counted in the confined child: every plan the tuner weighed carries the same bound,
    the model's arithmetic at one thread's peak rate."""
    model = _heavy()
    flops = mflop_per_image(model) * 1e6
    run = run_in_sandbox(
        export_arch(model, tmp_path / "heavy.pt"), small_test_set.images[:24], device="cpu",
        batch_size=32, limits=SandboxLimits(time_limit_s=120, threads=1),
    )
    assert run.trials, run
    bounds = {t.get("bound_ms") for t in run.trials}
    assert len(bounds) == 1, run.trials
    (bound,) = bounds
    # The counted arithmetic at a peak between 1 GFLOP/s and 1 TFLOP/s.
    assert isinstance(bound, float) and flops / 1e12 < bound / 1000 < flops / 1e9, run.trials


def test_a_light_model_is_not_counted(small_test_set: TestSet, tmp_path: Path) -> None:
    model = load_model(export("tiny_cnn", tmp_path / "tiny.pt"), device="cpu")
    runner = Runner(model, get_kind("keypoints"))
    x = runner.kind.to_input(small_test_set.images)
    with torch.inference_mode():
        reference, reference_s = runner.timed_batch1(x[:8])
        tuner = Tuner(
            model, x, reference=reference, reference_s=reference_s, run_batch=runner.run,
            threads=1, max_batch=32, device="cpu", share=1e9,
        )
        tuner.tune()
    assert [t for t in tuner.trials if t.per_image_ms is not None], tuner.trials
    assert tuner.bound_s_per_image == 0
    assert all("bound_ms" not in t.to_dict() for t in tuner.trials)
