"""Helpers for the test suite and benchmarks of adora; not part of the user API."""
