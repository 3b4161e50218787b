"""Execution plans: how a model's forward pass is run (variant, batch size, threads).

Pure data, shared by both sides of the sandbox: the child reports the plan it chose, and the
trusted parent stores it and hands it back as a hint when the same file is graded again. A
plan that comes back from the child is untrusted, so `Plan.from_dict` validates every field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What each variant is, in the order a newcomer should read them:
#   plain          the loaded TorchScript module, as the course runs it
#   frozen         torch.jit.freeze: parameters become constants, BatchNorm folds into convs
#   optimized      frozen + torch.jit.optimize_for_inference (oneDNN/MKLDNN convolutions)
#   fused          frozen + oneDNN Graph fusion (conv/linear + elementwise in one kernel)
#   channels_last  frozen, with weights and input in NHWC memory order
#   native         frozen, run with oneDNN off: PyTorch's own convolutions, NNPACK's Winograd
#                  kernels (fewer multiplications) at batch 16 and more
# A torch.export program (.pt2) has its own two:
#   plain          the program's module, torch.export.load(f).module(), as the course runs it
#   compiled       torch.compile (inductor) of that module, compiled while grading
VARIANTS = ("plain", "frozen", "optimized", "fused", "channels_last", "native")  # TorchScript's
PT2_VARIANTS = ("plain", "compiled")
ALL_VARIANTS = (*VARIANTS, "compiled")
CPU_ONLY_VARIANTS = frozenset({"fused", "channels_last", "native", "compiled"})
MAX_BATCH = 4096
MAX_THREADS = 1024


@dataclass(frozen=True, order=True)
class Plan:
    variant: str
    batch_size: int
    threads: int

    def describe(self) -> str:
        threads = "1 thread" if self.threads == 1 else f"{self.threads} threads"
        return f"{self.variant}, batch {self.batch_size}, {threads}"

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "batch_size": self.batch_size, "threads": self.threads}

    @classmethod
    def from_dict(cls, raw: object) -> Plan | None:
        """A plan from untrusted JSON, or None when anything about it is off."""
        if not isinstance(raw, dict):
            return None
        variant, batch, threads = raw.get("variant"), raw.get("batch_size"), raw.get("threads")
        if variant not in ALL_VARIANTS:
            return None
        if type(batch) is not int or type(threads) is not int:
            return None
        if not (1 <= batch <= MAX_BATCH and 1 <= threads <= MAX_THREADS):
            return None
        return cls(str(variant), batch, threads)


BASELINE = Plan("plain", 1, 1)


@dataclass(frozen=True)
class PlanHint:
    """A plan to try before tuning: the one chosen when this very file was graded before, or
    (`shared`) one chosen for another file of the same architecture. A shared plan comes from
    another student's grading, so the child keeps it only if it also beats the course's way
    on this file: a model that reports a poor plan for its architecture cannot make its
    lookalikes slower than the course's own loop on their first images."""

    plan: Plan
    shared: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "shared": self.shared}

    @classmethod
    def from_dict(cls, raw: object) -> PlanHint | None:
        plan = Plan.from_dict(raw)
        if plan is None or not isinstance(raw, dict):
            return None
        return cls(plan, shared=raw.get("shared") is not False)
