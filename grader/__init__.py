"""A model-grading server for deep-learning courses."""

__version__ = "0.1.0"

# Bumped whenever a change could alter a score; stored with every result as provenance.
EVALUATOR_VERSION = "1"
