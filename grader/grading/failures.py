"""Named grading failures and the messages a student reads for each."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.grading.kinds.base import Kind


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
        "({export_input},), dynamic_shapes=({{0: torch.export.Dim('batch')}},)), "
        "'model.pt2')`, or with TorchScript: `torch.jit.script(model).save('model.pt')`; a "
        "plain `torch.save(model, ...)` pickle or a state_dict cannot be graded."
    ),
    FailureKind.TOO_LARGE: "The model file is larger than this exercise allows.",
    FailureKind.BAD_OUTPUT: (
        "The model must take {input_text} and return {output_text}."
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
        """The message for the default kind of exercise (facial keypoints)."""
        from grader.grading.kinds import DEFAULT_KIND, get_kind

        return self.message_for(get_kind(DEFAULT_KIND))

    def message_for(self, task: Kind) -> str:
        base = student_message(self.kind, task)
        return f"{base} ({self.detail})" if self.detail else base


def student_message(failure: FailureKind, task: Kind) -> str:
    """What a student reads for `failure`, in the terms of the exercise's kind."""
    return STUDENT_MESSAGES[failure].format(
        example_input=task.example_input, export_input=task.export_input,
        input_text=task.input_text,
        output_text=task.output_text,
    )
