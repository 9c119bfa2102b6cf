"""What a cell binds and needs from other cells, read from its syntax tree."""

from __future__ import annotations

import pytest

from nbworker.source import used_names


@pytest.mark.parametrize(
    ("source", "needs"),
    [
        ("x = y + 1", {"y"}),
        ("y = 1\nx = y + 1", set()),
        ("x = x + 1", {"x"}),  # read before the cell binds it
        ("def f():\n    return g()\n", {"g"}),
        ("def f():\n    return g()\ng = 1", set()),  # a function reads globals when called
        # blocks run in order: what a block binds is bound for what follows in and after it
        ("for _ in range(3):\n    p = 1\n    q = p + 1", set()),
        ("for a, b in zip(C, C[1:]):\n    B[I[a], I[b]] += 1", {"B", "C", "I"}),
        ("with open(f) as fh:\n    data = fh.read()\n    n = len(data)", {"f"}),
        ("while n < 3:\n    n += 1", {"n"}),
        ("if c:\n    v = 1\nw = v", {"c"}),
        ("try:\n    x = 1\nexcept E as e:\n    print(e, y)\nz = x", {"E", "y"}),
        ('match m:\n    case {"k": kk} if kk > g:\n        r = kk', {"g", "m"}),
        ("[v * k for v in values]", {"k", "values"}),
        ("total = sum(v for v in values)\nprint(total)", {"values"}),
    ],
)
def test_used_names_follow_the_order_code_runs_in(source: str, needs: set[str]) -> None:
    assert used_names(source) == needs
