"""The hot path's remembered names (runtime/validate.py): a name checked once is not checked again,
and remembering changes no answer — a bad action or type name is refused every time, naming the
field, and only names that passed are ever remembered."""

from __future__ import annotations

import pytest
from mandate.errors import InvalidArgument
from mandate.runtime import validate as v
from mandate.v1 import common_pb2


@pytest.mark.parametrize("bad", ["Read", "read\n", "", "re ad", "ré", "a" * 101])
def test_r23_a_bad_action_is_refused_every_time(bad):
    v.action("action", "read")
    for _ in range(2):
        with pytest.raises(InvalidArgument) as refused:
            v.action("action", bad)
        assert refused.value.field == "action"
    assert bad not in v._VALID_ACTIONS
    assert "read" in v._VALID_ACTIONS


@pytest.mark.parametrize("bad", ["project", "Pro ject", "", "P" * 41, "Projeçt"])
def test_r23_a_bad_type_name_is_refused_every_time(bad):
    v.object_ref("resource", common_pb2.ObjectRef(type="Project", id="p1"), True)
    for _ in range(2):
        with pytest.raises(InvalidArgument) as refused:
            v.object_ref("resource", common_pb2.ObjectRef(type=bad, id="p1"), True)
        assert refused.value.field == "resource.type"
    assert bad not in v._VALID_TYPES


def test_remembered_names_are_bounded(monkeypatch):
    monkeypatch.setattr(v, "_VALID_ACTIONS", set())
    monkeypatch.setattr(v, "_VALID_LIMIT", 3)
    for number in range(10):
        assert v.action("action", f"act{number}") == f"act{number}"
    assert len(v._VALID_ACTIONS) == 3
