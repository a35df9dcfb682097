"""The store layer: reads and writes rows, never asks the policy."""
