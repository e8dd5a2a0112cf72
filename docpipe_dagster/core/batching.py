"""Greedy, order-preserving packing of items into groups under a count and a weight cap.

Used for intake batches (files, bytes), embedding requests (inputs, tokens) and commit
groups (chunks). An item heavier than the cap on its own still gets a group (of one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def pack(
    items: Iterable[T],
    *,
    weight: Callable[[T], float],
    max_weight: float = float("inf"),
    max_items: int | None = None,
) -> list[list[T]]:
    """Consecutive groups: a new one starts when the next item would pass either cap."""
    if max_items is not None and max_items < 1:
        raise ValueError("max_items must be >= 1")
    groups: list[list[T]] = []
    current: list[T] = []
    total = 0.0
    for item in items:
        w = weight(item)
        full = max_items is not None and len(current) >= max_items
        if current and (full or total + w > max_weight):
            groups.append(current)
            current, total = [], 0.0
        current.append(item)
        total += w
    if current:
        groups.append(current)
    return groups
