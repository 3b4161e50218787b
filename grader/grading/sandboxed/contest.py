"""The run's first batches settle what one timed batch in tuning could not.

The tuner times each candidate on one batch of the reference slice. On a shared host a burst of
load during that batch makes a good plan look slow (BENCHMARKS.md: vgg_small once ran 2.4x
slower after the tuner chose `optimize_for_inference` over fusion). So when a verified
runner-up came close, the run alternates its first batches between the two and then commits to
the faster by the median of their timings. Those batches are images the grading predicts
anyway, with plans that both agreed with the reference; a wrong pick costs at most a few
batches at the slower speed.
"""

from __future__ import annotations

import statistics

from grader.grading.sandboxed.tuner import Prepared

ROUNDS = 3  # timed batches per entrant: the median of three ignores one burst
# Best, contender, contender, best, best, contender: each plan runs early and late, and the
# process switches plans only three times.
_ORDER = (0, 1, 1, 0, 0, 1)
# Only when the contest's batches are a small part of the run.
_MAX_SHARE = 0.25


class Contest:
    """Which plan runs the next batch; `record` its time, `drop` a plan that failed."""

    def __init__(self, best: Prepared, contender: Prepared | None, images: int) -> None:
        self.entrants = [best]
        if contender is not None:
            needed = ROUNDS * (best.plan.batch_size + contender.plan.batch_size)
            if needed <= _MAX_SHARE * images:
                self.entrants.append(contender)
        self._times: list[list[float]] = [[] for _ in self.entrants]
        self._turn = 0
        self.decided = len(self.entrants) == 1

    @property
    def winner(self) -> Prepared:
        return self.entrants[0] if self.decided else self._leader()

    def pick(self) -> Prepared:
        if self.decided:
            return self.entrants[0]
        return self.entrants[_ORDER[self._turn % len(_ORDER)]]

    def record(self, prepared: Prepared, seconds: float, images: int) -> None:
        if self.decided or images <= 0:
            return
        self._times[self.entrants.index(prepared)].append(seconds / images)
        self._turn += 1
        if all(len(times) >= ROUNDS for times in self._times):
            self._decide(self._leader())

    def drop(self, prepared: Prepared) -> bool:
        """Leave out a plan whose batch failed; False when it was the last one."""
        if self.decided:
            return False
        index = self.entrants.index(prepared)
        self._decide(self.entrants[1 - index])
        return True

    def _leader(self) -> Prepared:
        medians = [statistics.median(t) if t else float("inf") for t in self._times]
        if medians[0] == float("inf"):
            return self.entrants[0]
        return self.entrants[medians.index(min(medians))]

    def _decide(self, winner: Prepared) -> None:
        self.entrants, self._times, self.decided = [winner], [[]], True
