"""torch.export programs (".pt2") inside the sandbox child: loading, batch limits, plans.

A loaded program is `torch.export.load(f).module()`, a GraphModule that keeps the train/eval
mode it was exported in (its `.eval()` raises NotImplementedError in torch 2.13) and checks
its input shapes against the range the batch dimension was exported with. `Exported` wraps it
so the rest of grading can treat it like a TorchScript module: calling it runs any batch,
split and padded into the program's batch range; `eval()` does nothing.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from grader.grading.failures import FailureKind, GradingFailure
from grader.grading.pt2_archive import FILE_OPS, program_versions

# aten ops whose flag argument says "training": (argument index, what it means).
_TRAINING_FLAGS = {
    "dropout": (2, "dropout is active"),
    "feature_dropout": (2, "dropout is active"),
    "alpha_dropout": (2, "dropout is active"),
    "feature_alpha_dropout": (2, "dropout is active"),
    "native_dropout": (2, "dropout is active"),
    "batch_norm": (5, "batch norm uses each batch's statistics"),
    "_native_batch_norm_legit": (5, "batch norm uses each batch's statistics"),
    "_native_batch_norm_legit_functional": (5, "batch norm uses each batch's statistics"),
    "instance_norm": (5, None),  # instance norm is meant to use batch statistics
}
TRAINING_HINT = "call model.eval() before torch.export.export"
# Largest batch a program is run at when its batch dimension has no upper bound.
_UNBOUNDED = 4096


def export_hint(example_input: str) -> str:
    return (
        "export it with torch.export.save(torch.export.export(model.eval(), "
        f"({example_input},), dynamic_shapes=({{0: torch.export.Dim('batch')}},)), "
        "'model.pt2')"
    )


class Exported:
    """A loaded program, callable on any batch size (see the module docstring)."""

    variants = ("plain", "compiled")

    def __init__(self, module: Any, *, min_batch: int, max_batch: int) -> None:
        self.module = module
        self.min_batch = max(1, min_batch)
        self.max_batch = max(self.min_batch, max_batch)

    def eval(self) -> Exported:
        return self  # a program keeps the mode it was exported in

    def modules(self) -> Iterator[torch.nn.Module]:
        return iter(self.module.modules())

    def with_module(self, module: Any) -> Exported:
        return Exported(module, min_batch=self.min_batch, max_batch=self.max_batch)

    def __call__(self, x: torch.Tensor) -> Any:
        n = x.shape[0]
        if self.min_batch <= n <= self.max_batch:
            return self.module(x)
        outs = []
        for start in range(0, n, self.max_batch):
            chunk = x[start : start + self.max_batch]
            k = chunk.shape[0]
            if k < self.min_batch:  # copies of the last image, dropped from the output
                pad = chunk[-1:].expand(self.min_batch - k, *chunk.shape[1:])
                chunk = torch.cat([chunk, pad])
            out = self.module(chunk)
            if not isinstance(out, torch.Tensor) or out.dim() == 0 or len(out) != len(chunk):
                return out  # Runner names what is wrong with it
            outs.append(out[:k])
        return torch.cat(outs)


@contextlib.contextmanager
def _safe_unpickling() -> Iterator[None]:
    """torch.export.load falls back to torch.load(weights_only=False) when the safe unpickler
    refuses something; this makes torch keep the safe one (the archive check refuses such
    files anyway)."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def _versions(path: Path) -> dict[str, Any] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = zf.namelist()[0].split("/", 1)[0]
            return program_versions(zf, prefix)
    except Exception:
        return None


def _ours() -> tuple[str, tuple[int, int], str]:
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch.export.pt2_archive.constants import ARCHIVE_VERSION_VALUE

    return torch.__version__, (SCHEMA_VERSION[0], SCHEMA_VERSION[1]), str(ARCHIVE_VERSION_VALUE)


def _version_problem(theirs: dict[str, Any] | None) -> str | None:
    """Why this torch cannot read the file, naming both versions; None when it can."""
    if theirs is None:
        return None
    torch_version, schema, archive = _ours()
    them = f"torch {theirs['torch']} (export schema {_schema_text(theirs['schema'])}"
    them += f", archive version {theirs['archive']})"
    us = f"torch {torch_version} (export schema {schema[0]}.{schema[1]}, archive version {archive})"
    file_schema = theirs["schema"]
    newer_schema = (
        isinstance(file_schema, tuple) and isinstance(file_schema[0], int)
        and file_schema[0] != schema[0]
    )
    if newer_schema or theirs["archive"] != archive:
        return f"the file was written by {them}; this grader runs {us} and cannot read it"
    return None


def _schema_text(schema: Any) -> str:
    return ".".join(str(v) for v in schema) if isinstance(schema, tuple) else "?"


def load_exported(path: Path, *, device: str, example_input: str) -> Exported:
    """Load a .pt2 archive as an `Exported`; LOAD_ERROR (or BAD_OUTPUT for a program exported
    in training mode) otherwise."""
    theirs = _versions(path)
    if problem := _version_problem(theirs):
        raise GradingFailure(FailureKind.LOAD_ERROR, problem)
    try:
        # An open file, not a path: torch warns about paths not ending in ".pt2", and the
        # child's model is an anonymous file (/proc/self/fd/N).
        with _safe_unpickling(), open(path, "rb") as fh:
            program = torch.export.load(fh)
    except Exception as exc:
        detail = f"torch.export.load could not read the file ({type(exc).__name__}: "
        detail += f"{str(exc).strip()[:600]})"
        if theirs is not None and theirs["torch"] != torch.__version__:
            detail += f"; it was written by torch {theirs['torch']}, this grader runs "
            detail += f"torch {torch.__version__}"
        raise GradingFailure(
            FailureKind.LOAD_ERROR, f"{detail}; {export_hint(example_input)}"
        ) from None
    if ops := file_operations(program):
        raise GradingFailure(
            FailureKind.SANDBOX_VIOLATION,
            f"the program calls {', '.join(ops)}: models may not read or write files",
        )
    if reason := training_mode(program):
        raise GradingFailure(
            FailureKind.BAD_OUTPUT,
            f"the program was exported in training mode ({reason}), so its predictions are "
            f"noisy; {TRAINING_HINT}",
        )
    low, high = batch_range(program)
    try:
        module = program.module()
        if device != "cpu":
            module = module.to(device)
    except Exception as exc:
        raise GradingFailure(
            FailureKind.LOAD_ERROR, f"the program could not be turned into a module ({exc})"
        ) from None
    return Exported(module, min_batch=low, max_batch=high)


def file_operations(program: Any) -> list[str]:
    found = set()
    for node in program.graph.nodes:
        name = getattr(node.target, "__name__", str(node.target))
        base = name.split(".")[0]
        if node.op == "call_function" and (base in FILE_OPS or "file" in base):
            found.add(f"aten::{base}")
    return sorted(found)


def training_mode(program: Any) -> str | None:
    """What in the graph runs in training mode (dropout, batch statistics), or None."""
    if program.graph_signature.buffers_to_mutate:
        return "it updates its buffers (batch-norm running statistics) on every call"
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", "").split(".")[0]
        flag = _TRAINING_FLAGS.get(name)
        if flag is None or flag[1] is None:
            continue
        index, what = flag
        value = node.args[index] if len(node.args) > index else node.kwargs.get(
            "train", node.kwargs.get("training")
        )
        if value is True:
            return what
    return None


def batch_range(program: Any) -> tuple[int, int]:
    """The batch sizes the program accepts: its first input's first dimension, a fixed
    number or a symbol with the range it was exported with."""
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = set(program.graph_signature.user_inputs)
    for node in inputs:
        if node.name not in user:
            continue
        value = node.meta.get("val")
        shape = getattr(value, "shape", None)
        if not shape:
            break
        first = shape[0]
        if isinstance(first, int):
            return first, first
        ranges = program.range_constraints.get(first.node.expr)
        if ranges is None:
            break
        low = int(ranges.lower) if ranges.lower.is_integer else 1
        try:
            high = int(ranges.upper)
        except (TypeError, ValueError, OverflowError):
            high = _UNBOUNDED
        return max(1, low), min(max(1, high), _UNBOUNDED)
    return 1, _UNBOUNDED


def differs_between_runs(model: Exported, x: torch.Tensor) -> bool:
    """Two runs on the same image: an eval-mode program gives the same numbers."""
    first, second = model(x), model(x)
    if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
        return False
    return not torch.equal(first, second)
