"""Values from a pipeline as C: checked literals, never pasted text.

Every number that reaches generated C goes through :func:`integer`, which
accepts only a Python ``int`` within the range of the C type it meets and
spells it in digits; every string goes through :func:`bytes_equal` or
:func:`bytes_prefix`, which compare a char array byte by byte with integer
literals, so no quote, backslash, comment or newline of a value ever
appears in the program text. Anything else raises :class:`LiteralError`,
and the operator then stays in user space.
"""

from __future__ import annotations

from .ktypes import KernelType

__all__ = [
    "MAX_STRING_BYTES",
    "LiteralError",
    "bytes_equal",
    "bytes_prefix",
    "integer",
    "integer_range",
    "string_bytes",
]

MAX_STRING_BYTES = 256
"""The longest string a comparison compiles (byte compares are unrolled)."""


class LiteralError(ValueError):
    """A value that cannot become a C literal of the type it meets."""


def integer_range(ktype: KernelType) -> tuple[int, int]:
    """The values a C integer type holds, ``(lowest, highest)``."""
    if ktype.is_string:
        raise LiteralError(f"{ktype.spelled()} is not an integer type")
    bits = ktype.size * 8
    if ktype.c_type.startswith("s"):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def integer(value: object, ktype: KernelType) -> str:
    """``value`` as a C literal of ``ktype``'s signedness (``42ULL``,
    ``-7LL``); raises :class:`LiteralError` unless it is an ``int`` (not a
    bool) that ``ktype`` holds."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LiteralError(f"{value!r} is not an integer")
    low, high = integer_range(ktype)
    if not low <= value <= high:
        raise LiteralError(f"{value} is outside {ktype.spelled()} ({low}..{high})")
    if low < 0:
        if value == -(1 << 63):
            return "(-9223372036854775807LL - 1)"
        return f"{value}LL"
    return f"{value}ULL"


def string_bytes(value: object, capacity: int) -> bytes:
    """The UTF-8 bytes of ``value``, to compare with a ``char[capacity]``
    field. Raises :class:`LiteralError` for a non-str, a string with a NUL
    (a decoded field never holds one) or U+FFFD (a decoded field shows it
    for invalid bytes, which a byte compare would not match), and for one
    longer than :data:`MAX_STRING_BYTES` or than the field."""
    if not isinstance(value, str):
        raise LiteralError(f"{value!r} is not a string")
    if "\0" in value:
        raise LiteralError("a string with a NUL character never matches a decoded field")
    if "\ufffd" in value:
        raise LiteralError("a string with U+FFFD matches invalid bytes only after decoding")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise LiteralError("a string with a lone surrogate never matches a decoded field") from None
    if len(data) > min(capacity, MAX_STRING_BYTES):
        raise LiteralError(
            f"a string of {len(data)} bytes is longer than the field (char[{capacity}])"
            if len(data) > capacity
            else f"a string of {len(data)} bytes is longer than {MAX_STRING_BYTES}"
        )
    return data


def _bytes_match(array: str, data: bytes, end: bool) -> str:
    """C true when ``array`` starts with ``data`` (``end``: then a NUL).

    One comparison of the bytes' differences OR-ed together, not one branch
    per byte: the verifier then walks one branch per string test, where a
    chain of ``&&`` over many bytes, inside ``|`` and ``~`` of other tests,
    made it walk more paths than it allows ("Argument list too long")."""
    terms = [f"((u8){array}[{i}] ^ {byte})" for i, byte in enumerate(data)]
    if end:
        terms.append(f"(u8){array}[{len(data)}]")
    return "((" + " | ".join(terms) + ") == 0)" if terms else "1"


def bytes_equal(array: str, capacity: int, value: object) -> str:
    """C true when the ``char[capacity]`` at ``array`` holds ``value`` as
    the decoder reads it (up to its first NUL, or all of it)."""
    data = string_bytes(value, capacity)
    return _bytes_match(array, data, len(data) < capacity)


def bytes_prefix(array: str, capacity: int, value: object) -> str:
    """C true when the ``char[capacity]`` at ``array`` starts with ``value``."""
    return _bytes_match(array, string_bytes(value, capacity), False)
