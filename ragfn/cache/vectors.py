"""The question vectors one process holds for the semantic cache: one growable matrix per scope, least recently used
scopes dropped past a row budget.

A scope's vectors change a few rows at a time (a store adds one, a trim or an eviction removes some), so a process
applies those rows instead of reading the whole scope again: at 3,000 entries a full reload after every store cost
30 ms a lookup and churned the heap (bench/cache_reload.py). Rows live in a buffer that doubles when full, and a
removed row is replaced by the last one, so a change costs O(changed rows), not O(scope).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np


class ScopeVectors:
    """One scope's rows, as of `generation` (the scope's change counter in Redis)."""

    def __init__(self, generation: int, dim: int | None = None) -> None:
        self.generation = generation
        self.ids: list[str] = []
        self._row: dict[str, int] = {}
        self._matrix = np.zeros((0, dim or 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def apply(self, changes: Iterable[tuple[str, bytes | None]], generation: int) -> None:
        """Set each id's vector, or remove the id where its vector is None (it is gone from Redis)."""
        for entry_id, raw in changes:
            if raw is None:
                self._remove(entry_id)
            else:
                self._put(entry_id, np.frombuffer(raw, dtype="<f4"))
        self.generation = generation

    def nearest(self, query: np.ndarray) -> tuple[str, float] | None:
        if not self.ids:
            return None
        scores = self._matrix[: len(self.ids)] @ query
        best = int(np.argmax(scores))
        return self.ids[best], float(scores[best])

    def rows(self) -> dict[str, np.ndarray]:
        return {entry_id: self._matrix[row].copy() for entry_id, row in self._row.items()}

    def _put(self, entry_id: str, vector: np.ndarray) -> None:
        row = self._row.get(entry_id)
        if row is None:
            if self._matrix.shape[1] != vector.shape[0]:  # the first row fixes the width
                if self.ids:
                    return  # another embedder's vector cannot share this scope (the scope names the embedder)
                self._matrix = np.zeros((0, vector.shape[0]), dtype=np.float32)
            row = len(self.ids)
            if row == self._matrix.shape[0]:
                grown = np.zeros((max(16, 2 * row), vector.shape[0]), dtype=np.float32)
                grown[:row] = self._matrix[:row]
                self._matrix = grown
            self.ids.append(entry_id)
            self._row[entry_id] = row
        self._matrix[row] = vector

    def _remove(self, entry_id: str) -> None:
        row = self._row.pop(entry_id, None)
        if row is None:
            return
        last = len(self.ids) - 1
        if row != last:
            moved = self.ids[last]
            self.ids[row], self._row[moved] = moved, row
            self._matrix[row] = self._matrix[last]
        self.ids.pop()
        if len(self._matrix) > 64 and 4 * len(self.ids) < len(self._matrix):  # a scope that shrank gives memory back
            self._matrix = self._matrix[: 2 * len(self.ids)].copy()


class HeldVectors:
    """The scopes this process has used last, up to `max_rows` rows in all. Thread-safe: scoring and changes to a
    scope happen under one lock, so a row never moves between computing a score and naming its id."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._scopes: OrderedDict[str, ScopeVectors] = OrderedDict()
        self._lock = threading.Lock()

    def __iter__(self):
        return iter(list(self._scopes))

    def held(self, scope: str) -> tuple[int, int] | None:
        """The generation and the row count of the scope as held, or None."""
        with self._lock:
            held = self._scopes.get(scope)
            return None if held is None else (held.generation, len(held))

    def replace(self, scope: str, rows: dict[bytes, bytes], generation: int) -> None:
        fresh = ScopeVectors(generation)
        fresh.apply(((k.decode(), v) for k, v in rows.items()), generation)
        with self._lock:
            self._scopes[scope] = fresh
            self._touch(scope)

    def update(self, scope: str, since: int, changes: list[tuple[str, bytes | None]], generation: int) -> int | None:
        """Apply the changes read after `since`, and say how many rows the scope has now; None (nothing applied)
        when another thread has moved the scope on meanwhile."""
        with self._lock:
            held = self._scopes.get(scope)
            if held is None or held.generation != since:
                return None
            held.apply(changes, generation)
            self._touch(scope)
            return len(held)

    def rows(self, scope: str) -> dict[str, np.ndarray]:
        """A copy of the scope's rows by id (empty when it is not held)."""
        with self._lock:
            held = self._scopes.get(scope)
            return {} if held is None else held.rows()

    def nearest(self, scope: str, query: np.ndarray) -> tuple[str, float] | None:
        with self._lock:
            held = self._scopes.get(scope)
            if held is None:
                return None
            self._scopes.move_to_end(scope)
            return held.nearest(query)

    def _touch(self, scope: str) -> None:
        self._scopes.move_to_end(scope)
        rows = sum(len(v) for v in self._scopes.values())
        while rows > self.max_rows and len(self._scopes) > 1:
            _, dropped = self._scopes.popitem(last=False)
            rows -= len(dropped)
