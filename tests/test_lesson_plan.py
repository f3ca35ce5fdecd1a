"""Without a kernel: resolving probes that share a scheme, splitting
trace_pipe lines, and the code each attach point generates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import pytest

from flowtrace import AttachError, Probe
from flowtrace.plan import resolve
from flowtrace.probes import AttachPoint, Kprobe, Param, Scheme, Tracepoint, Usdt
from flowtrace.trace_pipe import TraceFields, _mark, parse_trace_line


@dataclass(frozen=True)
class Point(AttachPoint):
    """An attach point that fits unless given a reason; needs no kernel."""

    label: str
    reason: str | None = None
    feature: ClassVar[str] = "nothing in particular"

    def describe(self) -> str:
        return self.label

    def missing(self) -> str | None:
        return self.reason

    def entry(self, fn: str, call: str, params: Sequence[Param]) -> str:
        return ""


GONE = "not in this kernel"


def issue(*, pointer: str | None = None) -> Probe:
    return Probe(
        "issue",
        Scheme("pointer", Point("kprobe start", pointer)),
        Scheme("sector", Point("tracepoint issue")),
        emits=False,
    )


def test_linked_probes_share_the_first_scheme_all_of_them_fit() -> None:
    complete = Probe(
        "completion",
        Scheme("pointer", Point("kprobe done", GONE)),
        Scheme("pointer", Point("kprobe done.isra.0")),
        Scheme("sector", Point("tracepoint complete")),
    )
    first, second = resolve([issue(), complete])
    assert (first.scheme, first.via, first.skipped) == ("pointer", "kprobe start", ())
    assert (second.scheme, second.via) == ("pointer", "kprobe done.isra.0")
    assert second.skipped == (("kprobe done", GONE),)


def test_a_scheme_one_probe_cannot_use_is_dropped_for_all() -> None:
    complete = Probe(
        "completion",
        Scheme("pointer", Point("kprobe done", GONE)),
        Scheme("sector", Point("tracepoint complete")),
    )
    first, second = resolve([issue(), complete])
    assert (first.via, second.via) == ("tracepoint issue", "tracepoint complete")
    assert {first.scheme, second.scheme} == {"sector"}
    # the issue kprobe fits by itself; the reason names the probe that cannot
    ((skipped, why),) = first.skipped
    assert skipped == "kprobe start"
    assert why == "scheme 'pointer' does not fit (completion: kprobe done: not in this kernel)"
    assert "tracepoint complete" in second.describe()


def test_probes_a_scheme_does_not_need_are_left_out() -> None:
    read = Probe(
        "read returned",
        Scheme("tracepoint", Point("tracepoint urandom_read", GONE)),
        Scheme("function", Point("kretprobe urandom_read_iter")),
        Scheme("descriptor", Point("tracepoint sys_exit_read")),
    )
    opened = Probe("open", Scheme("descriptor", Point("tracepoint sys_enter_openat")))
    (choice,) = resolve([read, opened])
    assert (choice.scheme, choice.via) == ("function", "kretprobe urandom_read_iter")
    assert choice.omitted == ("open",)
    assert choice.describe().endswith("(function needs no probe for: open)")


def test_a_helper_probe_that_cannot_attach_rules_out_its_scheme() -> None:
    read = Probe(
        "read returned",
        Scheme("function", Point("kretprobe", GONE)),
        Scheme("descriptor", Point("tracepoint sys_exit_read")),
    )
    opened = Probe("open", Scheme("descriptor", Point("tracepoint sys_enter_openat", GONE)))
    with pytest.raises(AttachError) as info:
        resolve([read, opened])
    message = str(info.value)
    assert message == (
        "cannot observe read returned + open on this kernel (tried function (read returned:"
        " kretprobe: not in this kernel); descriptor (open: tracepoint sys_enter_openat:"
        " not in this kernel))"
    )


def test_unlabelled_probes_resolve_on_their_own_beside_linked_ones() -> None:
    plain = Probe("plain", Point("first", GONE), Point("second"))
    choices = resolve([plain, issue(pointer=GONE)])
    assert [(c.probe.what, c.via, c.scheme) for c in choices] == [
        ("plain", "second", ""),
        ("issue", "tracepoint issue", "sector"),
    ]


def test_a_probe_labels_every_alternative_or_none() -> None:
    with pytest.raises(ValueError, match="label every alternative with a Scheme, or none"):
        Probe("mixed", Scheme("a", Point("x")), Point("y"))
    with pytest.raises(ValueError, match="needs at least one attach point"):
        Scheme("empty")


def test_fields_replace_how_each_point_fetches_a_parameter() -> None:
    params = [Param("dev"), Param("write", "u32")]
    call = "ft_probe_0({args})"
    tracepoint = Tracepoint("block", "block_rq_issue", fields={"write": "ft_w(args->rwbs)"})
    assert "ft_probe_0(args, args->dev, ft_w(args->rwbs))" in tracepoint.entry("f", call, params)
    kprobe = Kprobe(function="blk_mq_start_request", fields={"dev": "0"})
    assert "ft_probe_0(ctx, 0, PT_REGS_PARM2(ctx))" in kprobe.entry("f", call, params)
    assert tracepoint == Tracepoint(
        "block", "block_rq_issue", fields=(("write", "ft_w(args->rwbs)"),)
    )
    assert hash(tracepoint) == hash(Tracepoint("block", "block_rq_issue", fields=tracepoint.fields))


def test_usdt_reads_each_argument_into_a_variable_of_its_declared_type() -> None:
    point = Usdt("http__server__request", pid=1, provider="node", arguments=(6,))
    text = point.entry("f", "ft_probe_0({args})", [Param("path")])
    assert "u64 __v = 0; bpf_usdt_readarg(6, ctx, &__v); __v;" in text
    text = Usdt("gc__start", pid=1).entry("f", "p({args})", [Param("generation", "s32")])
    assert "s32 __v = 0; bpf_usdt_readarg(1, ctx, &__v)" in text


# -- trace_pipe lines ----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        (
            "            sync-9694    [000] ...21  1224.748943: bpf_trace_printk: ft1 hello 42",
            TraceFields("sync", 9694, 0, "...21", 1224.748943, "ft1 hello 42"),
        ),
        (  # bcc's tutorial output: 4 flag characters, an empty symbol
            "            bash-13364 [002] d... 24573433.052937: : Hello, World!",
            TraceFields("bash", 13364, 2, "d...", 24573433.052937, "Hello, World!"),
        ),
        (  # a command name with a dash and a space; the tgid column
            "  kworker/u4:1-x y-77      (   70) [001] .N.1.   5.000001: bpf_trace_printk: a: b",
            TraceFields("kworker/u4:1-x y", 77, 1, ".N.1.", 5.000001, "a: b"),
        ),
        (  # no irq-info column
            "           <...>-5       [003]    7.5: bpf_trace_printk: m",
            TraceFields("<...>", 5, 3, "", 7.5, "m"),
        ),
    ],
)
def test_trace_lines_split_like_trace_fields(line: str, fields: TraceFields) -> None:
    assert parse_trace_line(line) == fields


def test_lost_lines_give_their_count_and_others_nothing() -> None:
    assert parse_trace_line("CPU:1 [LOST 1234 EVENTS]") == 1234
    assert parse_trace_line("") is None
    assert parse_trace_line("# tracer: nop") is None


def test_the_marker_and_the_command_name_go_in_front_of_every_format() -> None:
    body = 'if (x)\n    ft_printk("%d (\\"ms\\")", f(x, (y)));\nelse\n    ft_printk( "none");'
    comm = "char ft_comm[16] = {}; bpf_get_current_comm(&ft_comm, sizeof(ft_comm));"
    failed = "ft_count_lost();"
    first = 'if (bpf_trace_printk("ft12ab %s\\t%d (\\"ms\\")", ft_comm, f(x, (y))) < 0)'
    second = 'if (bpf_trace_printk("ft12ab %s\\tnone", ft_comm) < 0)'
    assert _mark(body, "ft12ab") == (
        f"if (x)\n    ({{ {comm} {first} {failed} }});\nelse\n    ({{ {comm} {second} {failed} }});"
    )


@pytest.mark.parametrize("body", ['ft_printk("open', 'ft_printk("x", f(1);'])
def test_a_broken_ft_printk_call_is_refused(body: str) -> None:
    with pytest.raises(ValueError, match="ft_printk: "):
        _mark(body, "ft12ab")


def test_renamed_kernel_functions_are_found_but_never_their_cold_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowtrace import kernel

    names = ["f.cold", "g.cold", "g.isra.0", "h", "h.constprop.0", "i\t[module]"]
    symbols = b"".join(f"ffffffff81000000 T {n}\n".encode() for n in names)
    monkeypatch.setattr(kernel, "_kallsyms", lambda: symbols)
    assert kernel.find_kernel_function("f") is None
    assert kernel.find_kernel_function("g") == "g.isra.0"
    assert kernel.find_kernel_function("h") == "h"
    assert kernel.find_kernel_function("i") == "i"
