"""Resolving probes against the running kernel, without attaching anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import kernel
from .errors import AttachError
from .probes import Alternative, Probe

__all__ = ["Choice", "resolve", "resolve_probe"]


@dataclass(frozen=True)
class Choice:
    """The alternative chosen for a probe and why each better one was skipped."""

    probe: Probe
    chosen: Alternative
    skipped: tuple[tuple[str, str], ...]

    @property
    def via(self) -> str:
        return " + ".join(point.describe() for point in self.chosen)

    def describe(self) -> str:
        """One line: ``entry of sync(2) via tracepoint ... (skipped: kprobe ...: reason)``."""
        line = f"{self.probe.what} via {self.via}"
        if self.skipped:
            line += " (skipped: " + "; ".join(f"{d}: {r}" for d, r in self.skipped) + ")"
        return line


def _unfit(alternative: Alternative) -> str | None:
    features = kernel.features()
    for point in alternative:
        feature = features.get(point.feature)
        if feature is not None and not feature.available:
            return f"{point.feature} unavailable ({feature.detail})"
        if (reason := point.missing()) is not None:
            return reason
    return None


def resolve_probe(probe: Probe) -> Choice:
    """Choose the first alternative of ``probe`` that fits this kernel.

    Raises :class:`AttachError` listing every alternative and its reason when
    none fits.
    """
    skipped: list[tuple[str, str]] = []
    for alternative in probe.alternatives:
        reason = _unfit(alternative)
        if reason is None:
            return Choice(probe, alternative, tuple(skipped))
        skipped.append((" + ".join(p.describe() for p in alternative), reason))
    tried = "; ".join(f"{d}: {r}" for d, r in skipped) or "no alternatives declared"
    raise AttachError(f"cannot observe {probe.what} on this kernel (tried {tried})")


def resolve(probes: Sequence[Probe]) -> list[Choice]:
    """Resolve every probe of a source; all must fit."""
    return [resolve_probe(p) for p in probes]
