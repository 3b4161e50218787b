"""The untrusted side of grading: load a student's TorchScript model and run it on images.

This module runs inside the sandbox child, so it imports nothing from the database, the service
or the settings: only torch, numpy and the failure kinds. Everything a student's model can get
wrong becomes a `GradingFailure` with the model's own error text.

Fidelity with the course's batch-1 loop is the rule. Faster paths (a frozen, optimised module;
batches larger than one) are used only after a probe shows they give the same predictions as
the plain module at batch 1 on the first images.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from grader.grading.failures import FailureKind, GradingFailure

N_VALUES = 30
# Batched or optimised predictions may differ from batch-1 ones by float32 rounding only;
# anything larger means the model mixes images in a batch, so we fall back to batch 1.
_PROBE_ATOL = 1e-5
_PROBE_RTOL = 1e-5
_MAX_ERROR_TEXT = 800

Forward = Callable[[torch.Tensor], object]


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


def load_model(path: Path, *, device: str) -> torch.jit.ScriptModule:
    """Load a TorchScript archive onto `device`, in eval mode."""
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
            "export it with torch.jit.script(model).save('model.pt') or "
            "torch.jit.trace(model, torch.zeros(1, 1, 96, 96)).save('model.pt')",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as exc:  # any load problem is the file's fault
        raise GradingFailure(
            FailureKind.LOAD_ERROR,
            f"torch.jit.load could not read the file ({_short(exc)}); export the model with "
            "torch.jit.script(model).save('model.pt') or "
            "torch.jit.trace(model, torch.zeros(1, 1, 96, 96)).save('model.pt')",
        ) from None
    if not isinstance(model, torch.jit.ScriptModule):
        raise GradingFailure(FailureKind.LOAD_ERROR, "the archive does not hold a module")
    model.eval()
    return model


def _optimised(model: torch.jit.ScriptModule) -> torch.jit.ScriptModule | None:
    try:
        with warnings.catch_warnings():
            # Deprecated in favour of torch.compile, which cannot take a loaded ScriptModule.
            warnings.simplefilter("ignore", DeprecationWarning)
            frozen = torch.jit.freeze(model.eval())
            return torch.jit.optimize_for_inference(frozen)
    except Exception:
        return None  # not every scripted module freezes; the plain one is always available


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """Exactly the course's conversion: uint8 / 255 as float32, shape (N, 1, 96, 96)."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (96, 96):
        raise ValueError(f"expected uint8 images (N, 96, 96), got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32) / 255.0
    return x.unsqueeze(1)


class _WrongCount(Exception):
    def __init__(self, numel: int, expected: int) -> None:
        super().__init__(f"returned {numel} values for {expected // N_VALUES} image(s)")
        self.numel = numel


def _run(forward: Forward, x: torch.Tensor) -> torch.Tensor:
    """One forward pass; returns float32 (B, 15, 2) on CPU or raises BAD_OUTPUT / _WrongCount."""
    out = forward(x)
    if not isinstance(out, torch.Tensor):
        raise GradingFailure(
            FailureKind.BAD_OUTPUT, f"the model returned a {type(out).__name__}, not a tensor"
        )
    if not out.is_floating_point():
        raise GradingFailure(
            FailureKind.BAD_OUTPUT, f"the model returned dtype {out.dtype}, not a float tensor"
        )
    expected = x.shape[0] * N_VALUES
    if out.numel() != expected:
        raise _WrongCount(out.numel(), expected)
    return out.detach().reshape(-1, 15, 2).to(device="cpu", dtype=torch.float32)


def _batch1(forward: Forward, x: torch.Tensor, *, first: int = 0) -> torch.Tensor:
    """The course's own way: one image at a time; failures here are the model's fault."""
    results = []
    for i in range(x.shape[0]):
        try:
            results.append(_run(forward, x[i : i + 1]))
        except GradingFailure:
            raise
        except _WrongCount as exc:
            raise GradingFailure(
                FailureKind.BAD_OUTPUT,
                f"for one image the model {exc}, expected {N_VALUES} (15 keypoints as x, y)",
            ) from None
        except Exception as exc:
            raise GradingFailure(
                FailureKind.BAD_OUTPUT,
                f"the model raised an error on image {first + i + 1}: {_short(exc)}",
            ) from None
    return torch.cat(results) if results else torch.empty(0, 15, 2)


def _batched(forward: Forward, x: torch.Tensor, batch_size: int) -> torch.Tensor | None:
    """All images in batches; None when any batch fails (the caller falls back)."""
    results = []
    try:
        for start in range(0, x.shape[0], batch_size):
            results.append(_run(forward, x[start : start + batch_size]))
    except GradingFailure:
        raise
    except Exception:
        return None
    return torch.cat(results)


def _agrees(candidate: torch.Tensor, reference: torch.Tensor) -> bool:
    return bool(
        torch.allclose(candidate, reference, atol=_PROBE_ATOL, rtol=_PROBE_RTOL, equal_nan=True)
    )


def predict(
    model: torch.jit.ScriptModule, images: np.ndarray, *, device: str, batch_size: int
) -> np.ndarray:
    """Predictions float32 (N, 15, 2) for uint8 images (N, 96, 96)."""
    x = images_to_tensor(images).to(device)
    n = x.shape[0]
    batch_size = max(1, int(batch_size))
    if n == 0:
        return np.empty((0, 15, 2), dtype=np.float32)
    with torch.inference_mode():
        model.eval()
        probe_n = min(n, max(batch_size, 2))
        # The course's semantics: the plain module, one image at a time.
        reference = _batch1(model, x[:probe_n])
        candidates: list[Forward] = []
        optimised = _optimised(model)
        if optimised is not None:
            candidates.append(optimised)
        candidates.append(model)
        for forward in candidates:
            for size in (batch_size, 1) if batch_size > 1 else (1,):
                if forward is model and size == 1:
                    continue  # that is the final fallback below
                probe = _batched(forward, x[:probe_n], size)
                if probe is None or not _agrees(probe, reference):
                    continue
                rest = _batched(forward, x[probe_n:], size) if probe_n < n else probe[:0]
                if rest is not None:
                    return torch.cat([reference, rest]).numpy()
        rest = _batch1(model, x[probe_n:], first=probe_n)
        return torch.cat([reference, rest]).numpy()
