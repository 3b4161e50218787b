"""Grading integrity: copies found by their predictions, public baselines, and what a new
test-set version changed. Instructors only; nothing here is ever shown to a student."""
