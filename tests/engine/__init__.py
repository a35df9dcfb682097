"""Tests: The policy and the decision engine, tier 1, and the reviewer tools."""
