"""The untrusted side of grading: load a student's model (a TorchScript archive or a
torch.export program, see exported.py) and run it on images.

This module runs inside the sandbox child, so it imports nothing from the database, the service
or the settings: only torch, numpy, the failure kinds and the exercise kinds (which say how
stored images become the model's input and what one prediction is). Everything a student's
model can get wrong becomes a `GradingFailure` with the model's own error text.

Fidelity with the course's batch-1 loop is the rule: the first images are predicted exactly as
the course does (plain module, batch 1), and a faster plan (`tuner.py`) grades the rest only
after it gave the same predictions on those images.
"""

from __future__ import annotations

import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch

from grader.grading.archive import PT2, detect_format
from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.kinds import DEFAULT_KIND, Kind, get_kind
from grader.grading.plans import Plan, PlanHint
from grader.grading.sandboxed.contest import Contest
from grader.grading.sandboxed.exported import Exported, differs_between_runs, load_exported
from grader.grading.sandboxed.tuner import (
    REFERENCE_IMAGES,
    TUNING_SHARE,
    Prepared,
    Tuner,
    TuningReport,
    agrees,
)

_MAX_ERROR_TEXT = 800

Forward = Callable[[torch.Tensor], object]
# A loaded model: a TorchScript module, or a torch.export program.
Model = torch.jit.ScriptModule | Exported


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # TorchScript errors carry a long serialized traceback; its first lines say what happened.
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + " …"
    return f"{type(exc).__name__}: {text}"


def _is_plain_pickle(path: Path) -> bool:
    """True for a `torch.save` file: a zip with data.pkl but no TorchScript code."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    has_pickle = any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)
    has_code = any("/code/" in n or n.endswith("constants.pkl") for n in names)
    return has_pickle and not has_code


def export_hint(kind: Kind) -> str:
    return (
        "export it with torch.export.save(torch.export.export(model.eval(), "
        f"({kind.export_input},), dynamic_shapes=({{0: torch.export.Dim('batch')}},)), "
        "'model.pt2'), or with TorchScript: "
        "torch.jit.script(model).save('model.pt') or "
        f"torch.jit.trace(model, {kind.example_input}).save('model.pt')"
    )


def load_model(path: Path, *, device: str, kind: Kind | None = None) -> Model:
    """Load a TorchScript archive or a torch.export program onto `device`, in eval mode
    (a program keeps the mode it was exported in; one in training mode is refused)."""
    kind = kind or get_kind(DEFAULT_KIND)
    path = Path(path)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            # Our deployment's fault, not the student's: never report it as LOAD_ERROR.
            raise GradingFailure(
                FailureKind.INFRA_ERROR, f"device {device!r} requested but CUDA is not available"
            )
        # The course's float32 arithmetic: TF32 convolutions/matmuls would move the score by
        # ~1e-4 relative, ten times the fidelity bound.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if _is_plain_pickle(path):
        raise GradingFailure(
            FailureKind.LOAD_ERROR,
            "this file was written by torch.save (a pickle or a state_dict), not by TorchScript; "
            + export_hint(kind),
        )
    if detect_format(path) == PT2:
        return load_exported(path, device=device, example_input=kind.export_input)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as exc:  # any load problem is the file's fault
        raise GradingFailure(
            FailureKind.LOAD_ERROR,
            f"torch.jit.load could not read the file ({_short(exc)}); " + export_hint(kind),
        ) from None
    if not isinstance(model, torch.jit.ScriptModule):
        raise GradingFailure(FailureKind.LOAD_ERROR, "the archive does not hold a module")
    model.eval()
    return model


def _unoptimized() -> AbstractContextManager[object]:
    """TorchScript's executor without its graph optimisations, for a few calls of the plain
    module: on the first calls it profiles and then optimises the graph, which cost a light
    model several times its forward passes (BENCHMARKS.md, the reference unoptimised). The
    ops, and so the predictions, are the same."""
    return torch.jit.optimized_execution(False)


class _WrongCount(Exception):
    pass


def _check_deterministic(model: Model, x: torch.Tensor) -> None:
    """A program exported in training mode whose graph hides it (a custom dropout written
    with torch.rand) still answers differently twice: refuse it rather than grade noise."""
    if isinstance(model, Exported) and x.shape[0] and differs_between_runs(model, x[:1]):
        raise GradingFailure(
            FailureKind.BAD_OUTPUT,
            "the model gives different predictions for the same image on two runs "
            "(exported in training mode, or random); call model.eval() before exporting",
        )


class Runner:
    """Runs one model on images of one exercise kind, the course's way or with a plan."""

    def __init__(self, model: Forward, kind: Kind) -> None:
        self.model = model
        self.kind = kind

    def empty(self, images: int = 0) -> torch.Tensor:
        """Room for the predictions of `images` images, which each batch is copied into."""
        return torch.empty(images, *self.kind.output_shape)

    def run(self, forward: Forward, x: torch.Tensor) -> torch.Tensor:
        """One forward pass: float32 (B, *output_shape) on the CPU, or BAD_OUTPUT /
        _WrongCount (the number of values does not fit the batch)."""
        out = forward(x)
        if not isinstance(out, torch.Tensor):
            raise GradingFailure(
                FailureKind.BAD_OUTPUT, f"the model returned a {type(out).__name__}, not a tensor"
            )
        if not out.is_floating_point():
            raise GradingFailure(
                FailureKind.BAD_OUTPUT, f"the model returned dtype {out.dtype}, not a float tensor"
            )
        if out.numel() != x.shape[0] * self.kind.output_values:
            raise _WrongCount(f"returned {out.numel()} values for {x.shape[0]} image(s)")
        return out.detach().reshape(-1, *self.kind.output_shape).to("cpu", torch.float32)

    def batch1(self, x: torch.Tensor, *, first: int = 0) -> torch.Tensor:
        """The course's own way: the plain module, one image at a time; failures here are
        the model's fault."""
        results = self.empty(x.shape[0])  # copied out, as in run_plan
        for i in range(x.shape[0]):
            try:
                results[i : i + 1] = self.run(self.model, x[i : i + 1])
            except GradingFailure:
                raise
            except _WrongCount as exc:
                raise GradingFailure(
                    FailureKind.BAD_OUTPUT,
                    f"for one image the model {exc}, expected {self.kind.output_text}",
                ) from None
            except Exception as exc:
                raise GradingFailure(
                    FailureKind.BAD_OUTPUT,
                    f"the model raised an error on image {first + i + 1}: {_short(exc)}",
                ) from None
        return results

    def timed_batch1(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The reference: batch 1, plain module. Returns it and a steady per-slice time (the
        first calls can be slow, so those are replaced by the median)."""
        outs, times = [], []
        with _unoptimized():
            for i in range(x.shape[0]):
                t0 = time.perf_counter()
                outs.append(self.batch1(x[i : i + 1], first=i))
                times.append(time.perf_counter() - t0)
        steady = sorted(times[2:] or times)[len(times[2:] or times) // 2]
        return torch.cat(outs), steady * len(times)

    def run_plan(
        self, prepared: Prepared, x: torch.Tensor, into: torch.Tensor,
        contender: Prepared | None = None, announce: Callable[[Plan], None] | None = None,
    ) -> tuple[int, Prepared]:
        """Predict `x` into `into` with the chosen plan, or with the faster of it and a
        `contender` (see contest.py); returns how many images are done (fewer than all when a
        batch failed: the caller finishes those at batch 1) and the plan that ran the rest.
        The last batch is padded with copies of its last image, so every call has the shape
        the plan was verified and compiled for. `announce` is called each time the plan
        changes, before it runs.

        Each batch is copied out and the model's own output freed: a kept output, however
        small, is allocated among the batch's activations and pins them apart, so in a child
        that keeps its freed memory every batch would take fresh pages for its activations
        (BENCHMARKS.md, "Kept outputs")."""
        contest = Contest(prepared, contender, x.shape[0])
        done = 0
        running: Prepared | None = None
        while done < x.shape[0]:
            plan = contest.pick()
            if plan is not running and announce is not None:
                announce(plan.plan)
            running = plan
            if torch.get_num_threads() != plan.plan.threads:
                torch.set_num_threads(plan.plan.threads)
            size = plan.plan.batch_size
            chunk = x[done : done + size]
            k = chunk.shape[0]
            if k < size:
                chunk = torch.cat([chunk, chunk[-1:].expand(size - k, *chunk.shape[1:])])
            started = time.perf_counter()
            try:
                out = self.run(plan.forward, plan.batch_input(chunk))
            except GradingFailure:
                raise
            except Exception:
                if contest.drop(plan):
                    continue
                break
            contest.record(plan, time.perf_counter() - started, k)
            into[done : done + k] = out[:k]
            del out  # before the next batch allocates its activations
            done += k
        return done, contest.winner

    def settle_ties(self, predictions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Rows a plan's float32 rounding could flip (a near tie between two classes) are
        predicted again the course's way, so the verdict is the course's exactly."""
        rows = self.kind.ambiguous(predictions)
        for i in rows.tolist():
            predictions[i] = self.batch1(x[i : i + 1], first=i)[0]
        return predictions


def predict_with_plan(
    model: Model,
    images: np.ndarray,
    *,
    device: str,
    max_batch: int,
    kind: Kind | None = None,
    threads: int | None = None,
    hint: PlanHint | None = None,
    tuning_share: float = TUNING_SHARE,
    avoid: Sequence[Plan] = (),
    announce: Callable[[Plan], None] | None = None,
) -> tuple[np.ndarray, TuningReport]:
    """Predictions float32 (N, *kind.output_shape) for uint8 images (N, *kind.image_shape),
    with the plan used. `tuning_share` bounds the tuning time as a share of the predict time
    ahead (tests raise it to try every candidate); plans like one in `avoid` are not tried;
    `announce` is called with each plan before it first runs."""
    runner = Runner(model, kind or get_kind(DEFAULT_KIND))
    threads = threads or torch.get_num_threads()
    if isinstance(model, Exported):  # graded at the batch sizes it was exported for
        max_batch = min(max_batch, model.max_batch)
    report = TuningReport(plan=Plan("plain", 1, threads))
    clock = time.perf_counter()
    x = runner.kind.to_input(images).to(device)
    n = x.shape[0]
    report.convert_s = time.perf_counter() - clock
    if n == 0:
        return runner.empty().numpy(), report
    with torch.inference_mode():
        model.eval()
        clock = time.perf_counter()
        _check_deterministic(model, x)
        reference, reference_s = runner.timed_batch1(x[: min(n, REFERENCE_IMAGES)])
        report.reference_s = time.perf_counter() - clock
        tuner = Tuner(
            model, x, reference=reference, reference_s=reference_s, run_batch=runner.run,
            threads=threads, max_batch=max_batch, device=device, share=tuning_share, avoid=avoid,
            announce=announce,
        )
        started = time.perf_counter()
        best = tuner.tune(hint)
        report.tuning_s = time.perf_counter() - started
        report.plan, report.trials = best.plan, tuner.trials
        head = tuner.reference
        report.reference_images = head.shape[0]
        clock = time.perf_counter()
        predictions = runner.empty(n)
        predictions[: head.shape[0]] = head
        done, best = runner.run_plan(
            best, x[head.shape[0] :], predictions[head.shape[0] :], tuner.contender(),
            announce=announce,
        )
        tuner.settle(best)
        report.plan = best.plan
        start = head.shape[0] + done
        if start < n:  # a batch failed: the course's way for the rest names any real error
            predictions[start:] = runner.batch1(x[start:], first=start)
        predictions = runner.settle_ties(predictions, x)
        report.run_s = time.perf_counter() - clock
        report.prepared = best
        return predictions.numpy(), report


def preflight(
    model: Model, images: np.ndarray, *, device: str, kind: Kind | None = None
) -> tuple[np.ndarray, bool]:
    """The quick check at upload: the course's way on a few public images (any error is the
    model's), then the same images as one batch. Returns the predictions and whether the
    model also works on a batch (False: it will be graded one image at a time)."""
    runner = Runner(model, kind or get_kind(DEFAULT_KIND))
    x = runner.kind.to_input(images).to(device)
    with torch.inference_mode(), _unoptimized():
        model.eval()
        reference = runner.batch1(x)
        _check_deterministic(model, x)
        if isinstance(model, Exported) and model.max_batch == 1:
            return reference.numpy(), False  # exported for batch 1: graded one at a time
        try:
            batched = runner.run(model, x)
        except Exception:
            return reference.numpy(), False
        return reference.numpy(), x.shape[0] > 1 and agrees(batched, reference)


def predict_preview(
    report: TuningReport, images: np.ndarray, *, device: str, kind: Kind | None = None
) -> np.ndarray | None:
    """Public preview images, after the grading and with its plan; best effort (None when
    anything goes wrong: the preview never changes a grade)."""
    if report.prepared is None:
        return None
    runner = Runner(report.prepared.forward, kind or get_kind(DEFAULT_KIND))
    try:
        with torch.inference_mode():
            x = runner.kind.to_input(images).to(device)
            predictions = runner.empty(x.shape[0])
            done, _ = runner.run_plan(report.prepared, x, predictions)
        return predictions.numpy() if done == x.shape[0] else None
    except Exception:
        return None


def predict(
    model: Model,
    images: np.ndarray,
    *,
    device: str,
    batch_size: int,
    kind: Kind | None = None,
) -> np.ndarray:
    """Predictions for uint8 images; `batch_size` is the largest batch the plan may use."""
    predictions, _ = predict_with_plan(
        model, images, device=device, max_batch=batch_size, kind=kind
    )
    return predictions
