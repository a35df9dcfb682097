"""Tests: The check plane: Check, lists, Explain, access review, AuthZEN, the past."""
