"""The grading commands of the `grader` CLI: evaluate, dataset, doctor."""
