"""Named grading failures and the messages a student reads for each."""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    LOAD_ERROR = "LOAD_ERROR"
    TOO_LARGE = "TOO_LARGE"
    BAD_OUTPUT = "BAD_OUTPUT"
    NON_FINITE = "NON_FINITE"
    TIMEOUT = "TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    SANDBOX_VIOLATION = "SANDBOX_VIOLATION"
    CRASHED = "CRASHED"
    # Our own infrastructure failed; never counted against a student.
    INFRA_ERROR = "INFRA_ERROR"


STUDENT_MESSAGES: dict[FailureKind, str] = {
    FailureKind.LOAD_ERROR: (
        "The file could not be loaded as an exported model. Export it with torch.export, "
        "after model.eval(): `torch.export.save(torch.export.export(model, "
        "(torch.zeros(2, 1, 96, 96),), dynamic_shapes=({0: torch.export.Dim('batch')},)), "
        "'model.pt2')`, or with TorchScript: `torch.jit.script(model).save('model.pt')`; a "
        "plain `torch.save(model, ...)` pickle or a state_dict cannot be graded."
    ),
    FailureKind.TOO_LARGE: "The model file is larger than this exercise allows.",
    FailureKind.BAD_OUTPUT: (
        "The model must take a float32 batch of shape (N, 1, 96, 96) and return 30 "
        "floating-point values per image (15 keypoints as x, y)."
    ),
    FailureKind.NON_FINITE: "The model predicted NaN or infinite values; the score is 0.",
    FailureKind.TIMEOUT: "Grading took longer than this exercise's time limit.",
    FailureKind.MEMORY_LIMIT: "The model used more memory than the grader allows.",
    FailureKind.SANDBOX_VIOLATION: (
        "The model tried to do something a model must not do (read or write files, "
        "open network connections)."
    ),
    FailureKind.CRASHED: "The grading process crashed while running the model.",
    FailureKind.INFRA_ERROR: (
        "The grader itself failed. This attempt does not count against your limit; "
        "please resubmit or tell your instructor."
    ),
}


class GradingFailure(Exception):
    """A submission could not be graded for a reason we can name to the student."""

    def __init__(self, kind: FailureKind, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else str(kind))

    @property
    def message(self) -> str:
        base = STUDENT_MESSAGES[self.kind]
        return f"{base} ({self.detail})" if self.detail else base
