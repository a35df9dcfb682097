"""Tests: EventService: the change log."""
