"""Test data, on the trusted side only: parsing and validating hidden test sets, and the
synthetic data of the demo exercises."""
