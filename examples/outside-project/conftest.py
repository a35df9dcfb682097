from pathlib import Path

import pytest


@pytest.fixture
def mandate_world():
    return Path(__file__).parent / "world.yaml"  # or a dict in the same format
