"""Harness for `adabench compare`: jobs, runs and their statistics."""
