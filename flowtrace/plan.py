"""Resolving probes against the running kernel, without attaching anything.

Each probe gets the first of its alternatives that fits: the kernel has the
feature its attach points need and their targets exist. Probes whose
alternatives are labelled with :class:`~flowtrace.probes.Scheme` are
resolved together: the first scheme (in declaration order) that every probe
using it can attach is chosen for all of them, and a probe without an
alternative in that scheme is left out (the scheme does not need it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import kernel
from .errors import AttachError, KernelUnreadable
from .probes import Alternative, Probe

__all__ = ["Choice", "resolve", "resolve_probe"]


@dataclass(frozen=True)
class Choice:
    """The alternative chosen for a probe and why each better one was skipped.

    ``scheme`` names the chosen alternative's scheme ("" when unlabelled);
    ``omitted`` lists the probes the scheme does not need (reported once, on
    the first probe of the scheme).
    """

    probe: Probe
    chosen: Alternative
    skipped: tuple[tuple[str, str], ...]
    scheme: str = ""
    omitted: tuple[str, ...] = ()

    @property
    def via(self) -> str:
        """The chosen attach points, e.g. ``tracepoint syscalls:sys_enter_sync``."""
        return " + ".join(point.describe() for point in self.chosen)

    def describe(self) -> str:
        """One line: ``entry of sync(2) via tracepoint ... (skipped: kprobe ...: reason)``."""
        line = f"{self.probe.what} via {self.via}"
        if self.skipped:
            line += " (skipped: " + "; ".join(f"{d}: {r}" for d, r in self.skipped) + ")"
        if self.omitted:
            line += f" ({self.scheme} needs no probe for: " + ", ".join(self.omitted) + ")"
        return line


def _describe(alternative: Alternative) -> str:
    return " + ".join(p.describe() for p in alternative)


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
    none fits (:class:`KernelUnreadable` when this process is not privileged
    to trace: the kernel refused this user, which does not say what root
    could attach).
    """
    skipped: list[tuple[str, str]] = []
    for alternative in probe.alternatives:
        reason = _unfit(alternative)
        if reason is None:
            return Choice(probe, alternative, tuple(skipped))
        skipped.append((_describe(alternative), reason))
    tried = "; ".join(f"{d}: {r}" for d, r in skipped) or "no alternatives declared"
    raise _nothing_fits(f"cannot observe {probe.what} on this kernel (tried {tried})")


def _nothing_fits(message: str) -> AttachError:
    if kernel.privileged():
        return AttachError(message)
    return KernelUnreadable(f"{message}; not root: run as root (or with CAP_BPF and CAP_PERFMON)")


class _Linked:
    """Probes resolved together by scheme; each alternative is checked once."""

    def __init__(self, probes: Sequence[Probe]) -> None:
        self.probes = probes
        self._reasons: dict[tuple[int, int], str | None] = {}

    def reason(self, probe: int, alternative: int) -> str | None:
        key = (probe, alternative)
        if key not in self._reasons:
            self._reasons[key] = _unfit(self.probes[probe].alternatives[alternative])
        return self._reasons[key]

    def schemes(self) -> list[str]:
        ordered: list[str] = []
        for probe in self.probes:
            ordered += [s for s in probe.schemes if s not in ordered]
        return ordered

    def try_scheme(self, scheme: str) -> dict[int, int] | str:
        """Chosen alternative per needed probe, or why the scheme does not fit."""
        picks: dict[int, int] = {}
        for i, probe in enumerate(self.probes):
            candidates = [j for j, s in enumerate(probe.schemes) if s == scheme]
            if not candidates:
                continue
            fit = next((j for j in candidates if self.reason(i, j) is None), None)
            if fit is None:
                tried = "; ".join(
                    f"{_describe(probe.alternatives[j])}: {self.reason(i, j)}" for j in candidates
                )
                return f"{probe.what}: {tried}"
            picks[i] = fit
        return picks

    def resolve(self) -> list[Choice | None]:
        failed: dict[str, str] = {}
        for scheme in self.schemes():
            picks = self.try_scheme(scheme)
            if isinstance(picks, str):
                failed[scheme] = picks
                continue
            return self._choices(scheme, picks, failed)
        what = " + ".join(p.what for p in self.probes)
        tried = "; ".join(f"{s} ({r})" for s, r in failed.items())
        raise _nothing_fits(f"cannot observe {what} on this kernel (tried {tried})")

    def _why(self, probe: int, alternative: int, chosen: str, failed: dict[str, str]) -> str:
        """Why an alternative before the chosen one was skipped."""
        own = self.reason(probe, alternative)
        if own is not None:
            return own
        scheme = self.probes[probe].schemes[alternative]
        if scheme in failed:
            return f"scheme {scheme!r} does not fit ({failed[scheme]})"
        return f"the source's probes prefer scheme {chosen!r}"

    def _choices(
        self, scheme: str, picks: dict[int, int], failed: dict[str, str]
    ) -> list[Choice | None]:
        omitted = tuple(p.what for i, p in enumerate(self.probes) if i not in picks)
        choices: list[Choice | None] = []
        for i, probe in enumerate(self.probes):
            if i not in picks:
                choices.append(None)
                continue
            skipped = [
                (_describe(probe.alternatives[j]), self._why(i, j, scheme, failed))
                for j in range(picks[i])
            ]
            first = all(c is None for c in choices)
            choices.append(
                Choice(
                    probe,
                    probe.alternatives[picks[i]],
                    tuple(skipped),
                    scheme,
                    omitted if first else (),
                )
            )
        return choices


def resolve(probes: Sequence[Probe]) -> list[Choice]:
    """Resolve every probe of a source, in order; all must fit.

    Probes labelled with schemes are resolved together (see the module
    docstring) and those the chosen scheme does not need are left out of the
    result. Raises :class:`AttachError` when a probe (or every scheme) cannot
    attach.
    """
    linked_at = [i for i, p in enumerate(probes) if p.schemes]
    linked = _Linked([probes[i] for i in linked_at]).resolve() if linked_at else []
    by_index = dict(zip(linked_at, linked, strict=True))
    result: list[Choice] = []
    for i, probe in enumerate(probes):
        if i in by_index:
            choice = by_index[i]
            if choice is not None:
                result.append(choice)
        else:
            result.append(resolve_probe(probe))
    return result
