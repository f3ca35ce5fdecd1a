"""The console sink's histogram style options, each against bcc's exact text."""

from __future__ import annotations

import io
from typing import Any

import pytest

from flowtrace.records import Bucket, Histogram
from flowtrace.sinks.console import ConsoleSink, HistogramStyle
from flowtrace.testing import ListSource

pytestmark = pytest.mark.anyio

LEADING_ZEROS = Histogram(
    field="lat",
    unit="usecs",
    scale="log2",
    buckets=[Bucket(0, 1, 0), Bucket(2, 3, 0), Bucket(4, 7, 3), Bucket(8, 15, 1)],
)


async def printed(style: HistogramStyle) -> list[str]:
    out = io.StringIO()
    await (ListSource([LEADING_ZEROS]) | ConsoleSink[Any](stream=out, histogram=style)).run()
    return out.getvalue().splitlines()


async def test_strip_leading_zero_leaves_out_the_empty_rows_before_the_first_count() -> None:
    header = "     usecs               : count     distribution"
    counted = [
        "         4 -> 7          : 3        |****************************************|",
        "         8 -> 15         : 1        |*************                           |",
    ]
    empty = [
        "         0 -> 1          : 0        |                                        |",
        "         2 -> 3          : 0        |                                        |",
    ]
    assert await printed(HistogramStyle(strip_leading_zero=True)) == ["", header, *counted]
    assert await printed(HistogramStyle()) == ["", header, *empty, *counted]
    assert await printed(HistogramStyle(blank_line=False)) == [header, *empty, *counted]
