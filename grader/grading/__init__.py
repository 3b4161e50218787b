"""Test sets, the course's score, and the sandboxed runner that executes student models."""
