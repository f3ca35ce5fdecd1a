"""Stacks as part of an event: records that carry stack ids, handed on
with their stacks named.

A probe fills fields ``user_stack`` and ``kernel_stack`` (``s32``) of its
record with ``ft_stacks.get_stackid(ctx, BPF_F_USER_STACK)`` and
``ft_stacks.get_stackid(ctx, 0)`` (declare the map with
:func:`~flowtrace.stacks.stack_declarations`; a record without one of the
fields has no such stack). :class:`WithStacks` carries the records through
another output and hands each on as :class:`Stacked`: the record, and its
stacks named when the batch is read (the process, field ``pid``, should
still be running then). The stack map keeps each distinct stack once; when
it is full, new stacks get a negative id and are named as missed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .converted_output import Converted
from .loaded import LoadedProgram
from .records import Record
from .stacks import STACKS_MAP, Symbolizer

__all__ = ["Stacked", "WithStacks"]


class Stacked(Record, frozen=True, kw_only=True):
    """An ``event`` and its stacks, innermost frame first."""

    kind: ClassVar[str] = "stacked"
    event: Any
    user_stack: list[str]
    kernel_stack: list[str]


def _unchanged(batch: list[Any]) -> list[Any]:
    return batch


@dataclass(frozen=True)
class WithStacks(Converted):
    """``record`` values through ``output``, handed on as :class:`Stacked`."""

    convert: Callable[[list[Any]], list[Any]] = field(default=_unchanged)

    def converter(self, loaded: LoadedProgram) -> Callable[[list[Any]], list[Any]]:
        symbols = Symbolizer(loaded.table(STACKS_MAP))

        def name(batch: list[Any]) -> list[Any]:
            out = []
            for r in batch:
                user = getattr(r, "user_stack", None)
                kernel = getattr(r, "kernel_stack", None)
                out.append(
                    Stacked(
                        event=r,
                        user_stack=[] if user is None else symbols.user(user, r.pid),
                        kernel_stack=[] if kernel is None else symbols.kernel(kernel),
                    )
                )
            return out

        return name

    def describe(self, event: type[Any]) -> str:
        return f"{self.output.describe(self.record)}, with its stacks named"
