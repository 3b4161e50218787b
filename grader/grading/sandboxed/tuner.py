"""Choose how to run one student's model, by measuring it (as cuDNN's benchmark mode does).

Runs inside the sandbox child, on the test images it already holds. No plan is best for every
model (DESIGN.md): `optimize_for_inference` makes a shared-PReLU model 3x slower, oneDNN Graph
fusion makes ELU models 3x faster, a batch-mixing model must stay at batch 1. So each candidate
is prepared, warmed up and timed on the reference slice, and kept only if its predictions there
agree with the plain module's at batch 1 (the course's own semantics). The fastest verified
candidate grades the rest.

Tuning is part of the grading time, so it is budgeted: a candidate is tried only while the
time spent tuning stays under `TUNING_SHARE` of the predict time still ahead at the best speed
found so far; a candidate slower than the best after one timed batch is not timed again.

A heavy model whose best plan already runs near the machine's peak arithmetic rate (arithmetic.py)
gains little from the variants that do the same arithmetic: on one thread, on a machine where
they are the faster, it is first offered PyTorch's own convolutions (the native plan), whose
Winograd kernels do less of it. A model doing nearly all of it in matrix-vector products (an
MLP) is first tried at batch 32, which reads its weights a quarter as often as batch 8.

A plan remembered for this file, or for another file of its architecture, is tried before any
tuning (`tune`'s hint).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from grader.grading.plans import Plan, PlanHint
from grader.grading.sandboxed.arithmetic import (
    Arithmetic,
    count_arithmetic,
    native_gain,
    onednn_off,
    peak_flops,
)
from grader.grading.sandboxed.exported import Exported

Forward = Callable[[torch.Tensor], object]
# Runs the forward pass on a batch and returns (B, *kind.output_shape) float32 on the CPU,
# or raises.
RunBatch = Callable[[Forward, torch.Tensor], torch.Tensor]

REFERENCE_IMAGES = 8
TUNING_SHARE = 0.15
# Below this much predict time ahead, no candidate can pay for its own preparation.
MIN_WORK_S = 0.02
_WARMUP_RUNS = 2  # the profiling executor profiles on the first call and optimises on the second
_CHEAP_SHARE = 0.01
_FIRST_SHARE = 0.5
_CLEAR_WIN = 2.0
_AFTER_A_CLEAR_WIN = 0.3
# A plan doing its arithmetic at this share of the machine's peak rate or more leaves the variants
# doing the same arithmetic little to win (BENCHMARKS.md: resnet18_deep's timed within noise
# of each other, at ~1 s each to time).
_NEAR_PEAK = 0.7
# NNPACK runs only from this batch size (ATen's rule), and only on one thread: its own thread
# pool contends with OpenMP's (BENCHMARKS.md).
_NATIVE_BATCH = 16
# Its gain is on kernels larger than 1x1 (1.2-3x a layer), and it loses 3x on 1x1 ones: a model
# must do nearly all its arithmetic in the former (BENCHMARKS.md, the native plan).
_NATIVE_SPATIAL = 0.9
# And only where the machine's NNPACK beats its oneDNN on a 3x3 layer (AVX2 hosts, 1.5x; an
# AVX-512 host runs it at 0.55x, and its native trial cost resnet18_deep 4 s: BENCHMARKS.md).
_NATIVE_GAIN = 1.2
# Lighter models are bound by their calls, not their arithmetic: not worth a bound.
_COUNT_FROM_S = 0.01
# A model doing this share of its arithmetic in matrix-vector products is first tried at batch
# 32 (`_candidates`). The zoo's CNNs do at most 17 % in their heads; an MLP, all of it.
_MATVEC = 0.9
_CLOSE = 1.1  # a candidate within 10 % of the best is timed a second time
# Calls shorter than this in all are timed again, up to _STEADY_CALLS times: a fused plan's
# first call after its warm-up still runs 3-4x slower than the rest at batch 1 (0.44 against
# 0.11 ms), which decided a batch-1 model's plan on noise (BENCHMARKS.md).
_STEADY_S = 0.002
_STEADY_CALLS = 8
# Preparation (and, for fusion, compilation in the warm-up runs) in units of one freeze.
_PREP_FACTOR = {"plain": 0.0, "frozen": 1.0, "channels_last": 1.5, "optimized": 2.0, "fused": 3.0,
                "native": 1.0, "compiled": 0.0}
# torch.compile (inductor) of a small CNN here: seconds of tracing and C++ compilation, paid
# inside the grading time (BENCHMARKS.md, .pt2 vs TorchScript).
COMPILE_PRIOR_S = 8.0
# False in a child confined without a compiler or a writable cache (see docs/security.md):
# inductor cannot build its kernels there, so the variant is not tried.
compile_allowed = True
_FREEZES_IN_PREP = {"frozen": 1.0, "fused": 1.0, "channels_last": 1.3, "optimized": 2.0,
                    "native": 1.0}
# A verified runner-up this close to the best is raced against it in the run (contest.py).
_CONTEST_WITHIN = 2.0
_ATOL = 1e-5
_RTOL = 1e-5


@dataclass
class Trial:
    plan: Plan
    verdict: str  # chosen, reused, slower, disagrees, failed, skipped
    per_image_ms: float | None = None
    cost_ms: float = 0.0
    bound_ms: float | None = None  # the model's arithmetic at the peak rate, where counted

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.plan.to_dict(), "verdict": self.verdict}
        if self.per_image_ms is not None:
            out["per_image_ms"] = round(self.per_image_ms, 4)
        if self.bound_ms is not None:
            out["bound_ms"] = round(self.bound_ms, 4)
        out["cost_ms"] = round(self.cost_ms, 2)
        return out


@dataclass
class Prepared:
    plan: Plan
    forward: Forward
    per_image_s: float

    def batch_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.plan.variant == "channels_last":
            return x.contiguous(memory_format=torch.channels_last)
        return x


@dataclass
class TuningReport:
    plan: Plan
    convert_s: float = 0.0  # uint8 images to the model's float input
    reference_s: float = 0.0  # the first images, the course's way (plain, batch 1)
    tuning_s: float = 0.0
    run_s: float = 0.0  # the rest, with the chosen plan
    reference_images: int = 0
    trials: list[Trial] = field(default_factory=list)
    prepared: Prepared | None = None  # the chosen plan, ready to run more images


def agrees(candidate: torch.Tensor, reference: torch.Tensor) -> bool:
    return bool(torch.allclose(candidate, reference, atol=_ATOL, rtol=_RTOL, equal_nan=True))


def _prepare(model: torch.jit.ScriptModule | Exported, variant: str) -> Forward:
    if isinstance(model, Exported):
        if variant == "plain":
            return model
        if variant == "compiled":
            # Static shapes: every call has the plan's batch size (run_plan pads the last).
            return model.with_module(torch.compile(model.module, backend="inductor", dynamic=False))
        raise ValueError(f"{variant} is not a plan for a torch.export program")
    with warnings.catch_warnings():
        # Deprecated in favour of torch.compile, which cannot take a loaded ScriptModule.
        warnings.simplefilter("ignore", DeprecationWarning)
        if variant == "plain":
            return model
        if variant == "channels_last":
            nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            return torch.jit.freeze(nhwc)
        frozen = torch.jit.freeze(model)
        if variant == "optimized":
            return torch.jit.optimize_for_inference(frozen)
        if variant == "native":
            return _NativeConvolutions(frozen)
        return frozen  # "frozen", and "fused" (fusion happens while it warms up)


class _NativeConvolutions:
    """A frozen module run with oneDNN off, so its convolutions take PyTorch's own kernels
    (NNPACK at batch 16 and more). The switch is process-wide: it is set around each call."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor) -> object:
        with onednn_off():
            return self.module(x)


class Tuner:
    """Measures candidates on the reference slice and keeps the fastest that agrees."""

    def __init__(
        self,
        model: torch.jit.ScriptModule | Exported,
        x: torch.Tensor,
        *,
        reference: torch.Tensor,
        reference_s: float,
        run_batch: RunBatch,
        threads: int,
        max_batch: int,
        device: str,
        share: float = TUNING_SHARE,
        avoid: Sequence[Plan] = (),
        announce: Callable[[Plan], None] | None = None,
        arithmetic: Arithmetic | None = None,
        native_gain: float | None = None,
    ) -> None:
        """`arithmetic` is the model's, an image's worth; None counts it (a heavy model on a
        CPU only). `native_gain` is the machine's (arithmetic.native_gain); None measures it
        when it is needed."""
        self.model = model
        self.share = share
        self.avoid = {(plan.variant, plan.batch_size > 1) for plan in avoid}
        self.announce = announce
        self.x = x
        self.reference = reference
        self.run_batch = run_batch
        self.threads = max(1, threads)
        self.max_batch = max(1, max_batch)
        self.on_cpu = not device.startswith("cuda")
        per_image = reference_s / max(1, len(reference))
        self.reference_per_image_s = per_image
        self.best = Prepared(Plan("plain", 1, self.threads), model, per_image)
        self.verified: list[Prepared] = [self.best]  # every candidate that agreed, timed
        self.trials: list[Trial] = []
        self.spent_s = 0.0
        self.freeze_s: float | None = None
        # Each variant is prepared once; another batch size or thread count reuses it.
        self.forwards: dict[str, Forward] = {"plain": model}
        # Freezing costs about 3 ms plus 0.7 ms per submodule here (a ResNet of 18 blocks:
        # 80 ms); measured on the first candidate that freezes.
        self.freeze_prior_s = 0.003 + 0.0007 * sum(1 for _ in model.modules())
        self.batch_ok = True  # False once the model proves it needs batch 1
        self.exported = isinstance(model, Exported)
        self.compile_s: float | None = None
        self.arithmetic = arithmetic
        self.native_gain = native_gain
        self.bound_s_per_image = 0.0  # the arithmetic at the peak rate; 0 when not counted

    # -- budget ------------------------------------------------------------------------------

    def _ahead_s(self) -> float:
        return (len(self.x) - len(self.reference)) * self.best.per_image_s

    def _budget_left_s(self) -> float:
        share = self.share
        if self.best.per_image_s * _CLEAR_WIN < self.reference_per_image_s:
            # Already twice as fast as the course's way: what is left to gain rarely pays
            # for more preparation (BENCHMARKS.md, the zoo's tuning costs).
            share *= _AFTER_A_CLEAR_WIN
        return share * self._ahead_s() - self.spent_s

    def _estimate_s(self, plan: Plan) -> float:
        freeze = self.freeze_s if self.freeze_s is not None else self.freeze_prior_s
        prepared = plan.variant in self.forwards and plan.variant != "fused"
        prep = 0.0 if prepared else _PREP_FACTOR[plan.variant] * freeze
        if plan.variant == "compiled" and not prepared:
            prep = self.compile_s if self.compile_s is not None else COMPILE_PRIOR_S
        # Warm-up and timed runs, at a pessimistic 1.5x the best speed so far.
        runs = plan.batch_size * (_WARMUP_RUNS + 1) * self.best.per_image_s * 1.5
        return prep + runs

    # -- candidates --------------------------------------------------------------------------

    def _batches(self) -> bool:
        """One untimed run of the plain module at batch 8 on the reference images: a model
        that fails there (`x.view(1, -1)`) or answers differently (it mixes the images of a
        batch) is only ever run at batch 1, and no more batched candidates are spent on it."""
        size = min(8, self.max_batch, len(self.reference))
        probe = Plan("plain", size, self.threads)
        if size <= 1 or self._avoided(probe):
            return False
        if self.announce is not None:
            self.announce(probe)
        try:
            out = self.run_batch(self.model, self.x[:size])
        except Exception:
            self.trials.append(Trial(probe, "failed"))
            return False
        if not agrees(out, self.reference[:size]):
            self.trials.append(Trial(probe, "disagrees"))
            return False
        return True

    def _candidates(self) -> Iterator[Plan]:
        """In the order they most often win (BENCHMARKS.md, the zoo table): each one tried
        lowers the budget left for the rest, so the likely winners go first. Then the
        winner at the other batch sizes (batch 1 wins where activations outgrow the cache,
        32 where a call costs more than its arithmetic), then at one thread."""
        t = self.threads
        if self.exported:
            yield from self._exported_candidates()
            return
        if not self.on_cpu:
            for batch in (32, 128):
                if self.batch_ok and batch <= self.max_batch:
                    yield Plan("plain", batch, t)
            for variant in ("frozen", "optimized"):
                yield Plan(variant, self.best.plan.batch_size, t)
            return
        # Batch 8 stays in the cache and wins even for tiny models on one thread; on two, batch
        # 32 runs them at most a fifth faster, but its warm-up calls cost more than that gains
        # on a model graded in 0.1 s (BENCHMARKS.md, the zoo on an eighth host). Not so a model
        # of matrix-vector products: each call reads all its weights for little arithmetic,
        # and a batch of 32 reads them a quarter as often (1.8x faster on one thread, 2x on
        # two: BENCHMARKS.md, the fully-connected models).
        first = min(self._first_batch(), self.max_batch) if self.batch_ok else 1
        yield Plan("fused", first, t)
        if first > 1 and self.best.plan.batch_size == 1:
            # Fusion lost to batch 1: when a batch's activations outgrow the cache (1x1 convs
            # at full resolution), batch 1 is the fastest way for every variant.
            yield Plan("fused", 1, t)
        native = t == 1 and self.batch_ok and self.max_batch >= _NATIVE_BATCH
        spatial = self.arithmetic is not None and self.arithmetic.spatial_share >= _NATIVE_SPATIAL
        near = self.best.per_image_s * _NEAR_PEAK < self.bound_s_per_image
        if native and spatial and near and self._native_gain() > _NATIVE_GAIN:
            # Near the peak rate, the variants below do the same arithmetic and rarely win
            # much; PyTorch's own convolutions do less of it (arithmetic.py), so they go first.
            yield Plan("native", _NATIVE_BATCH, t)
        if self.best.plan.variant == "fused":
            size = self.best.plan.batch_size
        else:  # batch 1 if fusion's batched run showed the model needs it
            size = first if self.batch_ok else 1
        for variant in ("optimized", "channels_last", "plain", "frozen"):
            yield Plan(variant, size, t)
        if self.batch_ok:
            # Below batch 16 the native plan's convolutions are no longer NNPACK's.
            sizes = (32,) if self.best.plan.variant == "native" else (32, 8, 1)
            for batch in sizes:
                if batch <= self.max_batch:
                    yield Plan(self.best.plan.variant, batch, t)
        if t > 1:
            # Two threads lose to one on small batches, and whenever another process takes
            # the second core: worth one timed check of the winner.
            yield Plan(self.best.plan.variant, self.best.plan.batch_size, 1)

    def _first_batch(self) -> int:
        matvec = self.arithmetic is not None and self.arithmetic.matvec_share >= _MATVEC
        return 32 if matvec else 8

    def _exported_candidates(self) -> Iterator[Plan]:
        """A torch.export program: the plain module at the batch sizes it accepts, then
        compiled at the best of them (its compile cost counts against the tuning budget,
        so it is tried only when the work ahead can pay for it), then at one thread."""
        t = self.threads
        if self.batch_ok:
            for batch in (32, 8):
                if batch <= self.max_batch:
                    yield Plan("plain", batch, t)
        if compile_allowed and self.on_cpu:
            yield Plan("compiled", self.best.plan.batch_size, t)
        if t > 1:
            yield Plan(self.best.plan.variant, self.best.plan.batch_size, 1)

    def tune(self, hint: PlanHint | None = None) -> Prepared:
        """The fastest verified plan. A `hint` is used as soon as it agrees with the reference,
        without tuning again; a shared one (another file's) only if it also beats the
        reference's speed, the course's way."""
        seen: set[Plan] = {self.best.plan}
        if hint is not None and self._acceptable(hint.plan) and not self._avoided(hint.plan):
            if hint.plan == self.best.plan:
                self.trials.append(Trial(hint.plan, "reused"))
                return self.best
            if self._try(hint.plan, reuse=True, must_beat=hint.shared):
                self.verified = [self.best]  # chosen before, contest included: no contender
                return self.best
            seen.add(hint.plan)
        self._count_arithmetic()
        batching_checked = False
        first = True
        for plan in self._candidates():
            if plan in seen or (plan.batch_size > 1 and not self.batch_ok) or self._avoided(plan):
                continue
            allowance = self._allowance_s(plan, first=first)
            if allowance is not None:
                self._try(plan, allowance_s=allowance)
                if plan.batch_size > 1 and not batching_checked:
                    batching_checked = self._check_batching(self.trials[-1])
            else:
                self.trials.append(Trial(plan, "skipped"))
            seen.add(plan)
            first = False
        if self.bound_s_per_image:
            for trial in self.trials:
                trial.bound_ms = self.bound_s_per_image * 1000
        return self.best

    def contender(self) -> Prepared | None:
        """The fastest other verified plan, when its one timed batch came close enough to the
        best's for that batch's noise to have decided between them."""
        others = [
            p for p in self.verified
            if p.plan != self.best.plan and p.per_image_s <= self.best.per_image_s * _CONTEST_WITHIN
        ]
        return min(others, key=lambda p: p.per_image_s) if others else None

    def settle(self, winner: Prepared) -> None:
        """The run's contest chose `winner`: the trials say so."""
        if winner.plan == self.best.plan:
            return
        found = False
        for trial in self.trials:
            if trial.verdict == "chosen":
                trial.verdict = "slower"
            elif trial.plan == winner.plan and trial.verdict == "slower":
                trial.verdict, found = "chosen", True
        if not found:  # the course's own way, timed by the reference
            self.trials.append(Trial(winner.plan, "chosen", winner.per_image_s * 1000))
        self.best = winner

    def _native_gain(self) -> float:
        if self.native_gain is None:
            self.native_gain = native_gain(self.threads)
        return self.native_gain

    def _count_arithmetic(self) -> None:
        """The model's arithmetic: one more image through the plain module, counting (2-4 ms
        for a light model; it tells whether to start at batch 32). For a model heavy enough
        for its candidates to cost seconds, also at the machine's peak rate: above one
        thread, a matmul and a convolution timed, ~20 ms."""
        if not self.on_cpu or self.exported:
            return
        started = time.perf_counter()
        if self.arithmetic is None:
            self.arithmetic = count_arithmetic(self.model, self.x[:1])
        if self.arithmetic is not None and self.reference_per_image_s >= _COUNT_FROM_S:
            self.bound_s_per_image = self.arithmetic.flops / peak_flops(self.threads)
        self.spent_s += time.perf_counter() - started

    def _check_batching(self, trial: Trial) -> bool:
        """After the first batched candidate: True once batching is known to be sound. A
        candidate that agreed proves it; one that failed or disagreed may be the variant's
        fault or the batch's, which the plain module at batch 8 tells apart. Checking only
        then spares most models a batch of plain forward passes (BENCHMARKS.md)."""
        if trial.verdict in ("failed", "disagrees"):
            self.batch_ok = self._batches()
            return True
        return trial.per_image_ms is not None  # it ran to the check and agreed

    def _allowance_s(self, plan: Plan, *, first: bool) -> float | None:
        """How long a candidate may take before it is given up as slower; None when it is not
        worth trying. A candidate let in on its own terms below gets their time: were it held
        to the budget left, which may be spent already, it would be given up before it is
        timed, its cost paid and nothing learnt."""
        ahead = self._ahead_s()
        if ahead < MIN_WORK_S * TUNING_SHARE / self.share:
            return None
        estimate = self._estimate_s(plan)
        left = self._budget_left_s()
        if estimate <= left:
            return left
        if first and estimate <= _FIRST_SHARE * ahead:
            # The likeliest winner may cost up to half the work ahead: small models gain 3-5x
            # from it, while their whole budget would not pay for its compilation.
            return _FIRST_SHARE * ahead
        if estimate < _CHEAP_SHARE * ahead:
            # A check that costs under 1 % of the work ahead is worth it whatever is left.
            return _CHEAP_SHARE * ahead
        return None

    def _avoided(self, plan: Plan) -> bool:
        return (plan.variant, plan.batch_size > 1) in self.avoid

    def _acceptable(self, plan: Plan) -> bool:
        if plan.threads > self.threads or plan.batch_size > max(self.max_batch, 1):
            return False
        if self.exported:
            return plan.variant == "plain" or (
                plan.variant == "compiled" and compile_allowed and self.on_cpu
            )
        if plan.variant not in _PREP_FACTOR or plan.variant == "compiled":
            return False
        return self.on_cpu or plan.variant in ("plain", "frozen", "optimized")

    # -- one candidate -----------------------------------------------------------------------

    def _try(
        self, plan: Plan, *, allowance_s: float | None = None, reuse: bool = False,
        must_beat: bool = False,
    ) -> bool:
        """Try one candidate; True when it is the new best. `allowance_s`: given up as slower
        once its preparation and warm-up take longer."""
        if self.announce is not None:
            self.announce(plan)
        started = time.perf_counter()
        verdict, per_image = "failed", None
        torch.set_num_threads(plan.threads)
        try:
            sample = self.x[: plan.batch_size]
            verdict, per_image, prepared = self._measure(
                plan, sample, started, allowance_s, reuse=reuse, must_beat=must_beat
            )
            if prepared is not None:
                self.best = prepared
        except _OverBudget:
            verdict = "slower"
        except Exception:
            verdict = "failed"
        finally:
            torch.jit.enable_onednn_fusion(False)
            torch.set_num_threads(self.best.plan.threads)
        cost = time.perf_counter() - started
        self.spent_s += cost
        if verdict in ("chosen", "reused"):
            for trial in self.trials:
                if trial.verdict == "chosen":
                    trial.verdict = "slower"
        ms = per_image * 1000 if per_image is not None else None
        self.trials.append(Trial(plan, verdict, ms, cost * 1000))
        return verdict in ("chosen", "reused")

    def _measure(
        self, plan: Plan, sample: torch.Tensor, started: float, allowance_s: float | None, *,
        reuse: bool = False, must_beat: bool = False,
    ) -> tuple[str, float | None, Prepared | None]:
        """Prepare, warm up, check and time one candidate: (verdict, per-image s, prepared).
        A reused plan that `must_beat` the course's way and does not is only "slower"."""
        t0 = time.perf_counter()
        if plan.variant == "fused":
            torch.jit.enable_onednn_fusion(True)
        forward = self.forwards.get(plan.variant)
        if forward is None:
            forward = self.forwards[plan.variant] = _prepare(self.model, plan.variant)
            # torch.compile is lazy: its cost is in the first warm-up run, timed below.
            if plan.variant in _FREEZES_IN_PREP and self.freeze_s is None:
                self.freeze_s = (time.perf_counter() - t0) / _FREEZES_IN_PREP[plan.variant]
        prepared = Prepared(plan, forward, float("inf"))
        xb = prepared.batch_input(sample)
        for run in range(_WARMUP_RUNS):
            self.run_batch(prepared.forward, xb)
            if run == 0 and plan.variant == "compiled" and self.compile_s is None:
                self.compile_s = time.perf_counter() - t0
            if allowance_s is not None and time.perf_counter() - started > allowance_s:
                raise _OverBudget
        torch.jit.enable_onednn_fusion(False)
        # Checked on the reference images: a model that mixes the images of a batch changes
        # them all, so the course's way need not be paid for the rest of a larger batch.
        checked = min(len(sample), len(self.reference))
        per_image, timed_s, calls = float("inf"), 0.0, 0
        while True:
            t1 = time.perf_counter()
            out = self.run_batch(prepared.forward, xb)
            elapsed = time.perf_counter() - t1
            per_image = min(per_image, elapsed / len(sample))
            timed_s, calls = timed_s + elapsed, calls + 1
            if calls == 1 and not agrees(out[:checked], self.reference[:checked]):
                return "disagrees", None, None
            if timed_s < _STEADY_S and calls < _STEADY_CALLS:
                continue  # calls this short are not steady yet (fusion's first timed one: 3x)
            if calls >= 2 or reuse or per_image > self.best.per_image_s * _CLOSE:
                break
        prepared.per_image_s = per_image
        if reuse and not (must_beat and per_image >= self.reference_per_image_s):
            return "reused", per_image, prepared
        self.verified.append(prepared)
        if per_image >= self.best.per_image_s:
            return "slower", per_image, None
        return "chosen", per_image, prepared


class _OverBudget(Exception):
    pass
