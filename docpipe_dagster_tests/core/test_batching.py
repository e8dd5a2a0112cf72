from __future__ import annotations

import random

import pytest

from docpipe_dagster.core.batching import pack


def test_caps_by_count_and_weight_in_order() -> None:
    items = [3, 3, 3, 1, 1, 1, 1]
    assert pack(items, weight=float, max_weight=6) == [[3, 3], [3, 1, 1, 1], [1]]
    assert pack(items, weight=float, max_items=3) == [[3, 3, 3], [1, 1, 1], [1]]
    assert pack(items, weight=float, max_weight=6, max_items=2) == [[3, 3], [3, 1], [1, 1], [1]]


def test_an_item_over_the_weight_cap_gets_a_group_of_its_own() -> None:
    assert pack([1, 50, 1], weight=float, max_weight=10) == [[1], [50], [1]]


def test_no_items_no_groups_and_bad_count_cap() -> None:
    assert pack([], weight=float, max_weight=1) == []
    with pytest.raises(ValueError):
        pack([1], weight=float, max_items=0)


def test_random_packings_keep_every_item_once_and_respect_the_caps() -> None:
    rng = random.Random(3)
    for _ in range(200):
        items = [rng.randint(1, 20) for _ in range(rng.randint(0, 60))]
        cap, count = rng.randint(5, 40), rng.randint(1, 8)
        groups = pack(items, weight=float, max_weight=cap, max_items=count)
        assert [i for g in groups for i in g] == items
        for g in groups:
            assert len(g) <= count
            assert len(g) == 1 or sum(g) <= cap
