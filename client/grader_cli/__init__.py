"""Course CLI for the model-grading server."""

__version__ = "0.1.0"
