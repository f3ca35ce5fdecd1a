"""Records that hold one of several event types, so several probes share
one buffer and their events arrive in the order they happened."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ktypes
from .events import Event, Layout, event_type, layout_of

__all__ = ["TAG", "TaggedLayout", "member_field", "tagged_event"]

TAG = "ft_member"


def member_field(tag: int | None, field: str) -> str:
    """The record field holding member ``tag``'s ``field`` (``field`` itself
    in an untagged record)."""
    return field if tag is None else f"m{tag}_{field}"


@dataclass(frozen=True)
class TaggedLayout(Layout[Any]):
    """The layout of records that each hold one of several event types: a
    ``ft_member`` tag, then every member's fields (``m<tag>_<field>``), of
    which the tagged member's are filled. Decoding yields each record as its
    member's event type, in record order."""

    members: tuple[type[Event], ...] = ()

    def decode(
        self, records: np.ndarray[Any, Any], strings: dict[bytes, str] | None = None
    ) -> list[Any]:
        tags = records[TAG]
        out: list[Any] = [None] * len(records)
        for tag, member in enumerate(self.members):
            where = np.flatnonzero(tags == tag)
            if not len(where):
                continue
            picked = records[where]
            # the member's own fields, where this record type holds them
            fields = layout_of(member).fields
            offsets = picked.dtype.fields
            view = np.dtype(
                {
                    "names": [f.name for f in fields],
                    "formats": [f.ktype.numpy_code for f in fields],
                    "offsets": [offsets[member_field(tag, f.name)][1] for f in fields],
                    "itemsize": picked.dtype.itemsize,
                }
            )
            events = layout_of(member).decode(picked.view(view), strings)
            for at, event in zip(where.tolist(), events, strict=True):
                out[at] = event
        return [e for e in out if e is not None]


def tagged_event(members: Sequence[type[Event]]) -> tuple[type[Event], TaggedLayout]:
    """The record type holding any of ``members`` (filled fields included, so
    each member's automatic fields are filled), and its tagged layout."""
    fields = [(TAG, ktypes.integer(1, False))]
    for tag, member in enumerate(members):
        fields += [(member_field(tag, f.name), f.ktype) for f in layout_of(member).fields]
    record = event_type("Or".join(m.__name__ for m in members), fields)
    base = layout_of(record)
    return record, TaggedLayout(record, base.fields, base.size, base.align, tuple(members))
