"""Tests: The store on every engine: migrations, replicas, races, the cost of a write."""
