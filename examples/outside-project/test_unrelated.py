def test_that_never_touches_mandate():
    assert sorted([3, 1, 2]) == [1, 2, 3]
