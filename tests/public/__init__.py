"""Tests: What others see: the CLI, the client, the pytest plugin, the wheel, the API's names, the
docs."""
