"""Stack counts printed as bcc's profile and offcputime print them."""

from __future__ import annotations

from flowtrace.stack_counts import StackCount

__all__ = ["stack_block"]


def stack_block(count: StackCount) -> str:
    """Kernel frames then user frames (innermost first, one per line), the
    command and pid, the count, and an empty line."""
    frames = [f"    {frame}" for frame in (*count.kernel_stack, *count.user_stack)]
    return "\n".join(
        [*frames, f"    {'-':<16} {count.comm} ({count.pid})", f"        {count.count}", ""]
    )
