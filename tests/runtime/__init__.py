"""Tests: The running server: callers, limits, errors, lifecycle, reloads, operations."""
