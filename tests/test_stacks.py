"""Without a kernel: naming addresses (ELF symbols, kallsyms), stacks with
missing frames, folded stacks and the flame graph drawn from them."""

from __future__ import annotations

import errno
import re
import subprocess
from pathlib import Path

import pytest
from workloads import program

from flowtrace import Pipeline
from flowtrace.elf_symbols import elf_functions
from flowtrace.errors import StageError
from flowtrace.flamegraph import flame_graph
from flowtrace.sinks.stack_lines import stack_block
from flowtrace.sinks.stacks import FlameGraphSink, FoldedSink
from flowtrace.stack_counts import StackCount
from flowtrace.stacks import MISSED_KERNEL, MISSED_USER, KernelSymbols, Symbolizer, folded
from flowtrace.testing import ListSource

pytestmark = pytest.mark.anyio


def symbols_of(binary: str) -> dict[str, int]:
    """Function symbols and their addresses as nm lists them."""
    out = subprocess.run(["nm", binary], check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            found[parts[2]] = int(parts[0], 16)
    return found


def test_elf_symbols_name_what_nm_names() -> None:
    binary = program("spin", "-fno-omit-frame-pointer")
    expected = symbols_of(binary)
    functions = elf_functions(binary)
    (text,) = [s for s in functions.segments if s[1] <= expected["main"] < s[1] + s[2]]
    for name in ("main", "spin_here"):
        offset = expected[name] - text[1] + text[0]  # where it lies in the file
        assert functions.name(offset) == name
        assert functions.name(offset + 4) == name
        assert functions.name(offset + 4, with_offset=True) == f"{name}+0x4"
    assert elf_functions(binary) is functions  # read once per file version


def test_files_that_are_not_elf_name_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(100))
    assert elf_functions(str(junk)).name(0) is None
    assert elf_functions(str(tmp_path / "missing")).name(0) is None


def test_kernel_symbols_come_from_kallsyms(tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(
        "ffffffff81000000 T _stext\nffffffff81000100 t do_thing\n"
        "ffffffff81000200 D some_data\nffffffff81000300 T other [mod]\n"
    )
    symbols = KernelSymbols(str(kallsyms))
    assert symbols.name(0xFFFFFFFF81000104) == "do_thing"
    assert symbols.name(0xFFFFFFFF81000104, with_offset=True) == "do_thing+0x4"
    assert symbols.name(0xFFFFFFFF81000250) == "do_thing"  # data is not code
    assert symbols.name(0xFFFFFFFF81000301) == "other"
    assert symbols.name(0x1000) == "0x1000"


class FakeStacks:
    def __init__(self, stacks: dict[int, list[int]]) -> None:
        self.stacks = stacks

    def walk(self, stack_id: int) -> list[int]:
        return self.stacks[stack_id]


def test_stack_ids_that_kept_no_stack_say_why() -> None:
    symbols = Symbolizer(FakeStacks({}))
    assert symbols.user(-errno.EEXIST, 1) == [MISSED_USER]
    assert symbols.kernel(-errno.ENOMEM) == [MISSED_KERNEL]
    assert symbols.user(-errno.EFAULT, 1) == []  # a kernel thread has no user stack
    assert symbols.kernel(-errno.EFAULT) == []


def test_addresses_of_a_process_that_is_gone_are_shown_in_hex() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    symbols = Symbolizer(FakeStacks({3: [0x401000, 0x7F0000001234]}))
    assert symbols.user(3, gone.pid) == ["0x401000", "0x7f0000001234"]


def test_folded_stacks_run_from_the_outermost_frame() -> None:
    assert folded("app", ["leaf", "main"], ["k_inner", "k_outer"]) == (
        "app;main;leaf;k_outer;k_inner"
    )


def count(user: list[str], n: int, comm: str = "app") -> StackCount:
    return StackCount(pid=7, comm=comm, user_stack=user, kernel_stack=[], count=n)


async def test_the_folded_sink_adds_up_equal_stacks_highest_first(tmp_path: Path) -> None:
    out = tmp_path / "out.folded"
    counts = [count(["b", "main"], 2), count(["c", "main"], 5), count(["b", "main"], 4)]
    await Pipeline(ListSource(counts), (), FoldedSink(str(out))).run()
    assert out.read_text() == "app;main;b 6\napp;main;c 5\n"


async def test_stack_sinks_refuse_what_is_not_a_stack(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="folded takes stack counts, not a int"):
        await Pipeline(ListSource([1]), (), FoldedSink(str(tmp_path / "x"))).run()


def boxes(svg: str) -> dict[str, tuple[float, float, int]]:
    """Each box's frame name -> (x, width, samples), from the drawn SVG."""
    found = {}
    for m in re.finditer(
        r'<title>([^<]+) \((\d+) samples, [\d.]+%\)</title><rect x="([\d.]+)" y="\d+"'
        r' width="([\d.]+)"',
        svg,
    ):
        found[m[1]] = (float(m[3]), float(m[4]), int(m[2]))
    return found


def test_the_flame_graph_gives_each_frame_its_share_of_the_width() -> None:
    svg = flame_graph({"app;main;a": 30, "app;main;b": 10, "app;main": 10, "other": 50}, "t")
    drawn = boxes(svg)
    assert {name: n for name, (_, _, n) in drawn.items()} == {
        "all": 100,
        "app": 50,
        "main": 50,
        "a": 30,
        "b": 10,
        "other": 50,
    }
    full = drawn["all"][1]
    assert full == pytest.approx(1180)
    assert drawn["a"][1] == pytest.approx(full * 0.3, abs=0.1)
    assert drawn["b"][0] == pytest.approx(drawn["a"][0] + drawn["a"][1], abs=0.1)
    assert drawn["other"][0] == pytest.approx(drawn["app"][0] + drawn["app"][1], abs=0.1)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")


def test_the_flame_graph_escapes_names_and_labels_only_what_fits() -> None:
    svg = flame_graph({"a<b>&c;" + "x" * 300: 1, "wide": 1}, "<t>")
    assert "<title>a&lt;b&gt;&amp;c (1 samples, 50.00%)</title>" in svg
    assert ">a&lt;b&gt;&amp;c</text>" in svg
    assert "&lt;t&gt;</text>" in svg
    (label,) = re.findall(r">(x+\.\.)</text>", svg)  # cut to fit its 590 pixels
    assert 70 < len(label) < 90
    assert f"<title>{'x' * 300} (1 samples" in svg  # the tooltip names it whole
    crowded = flame_graph({"big": 10**6, "speck": 1})
    assert "speck" not in crowded  # a thousandth of a pixel is not drawn


async def test_the_flame_graph_sink_writes_the_svg(tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    counts = [count(["f", "main"], 3), count(["g", "main"], 1)]
    await Pipeline(ListSource(counts), (), FlameGraphSink(str(out), title="g")).run()
    assert boxes(out.read_text())["f"][2] == 3


def test_stack_block_prints_as_bcc_profile_does() -> None:
    count = StackCount(
        pid=42, comm="dd", user_stack=["main", "_start"], kernel_stack=["ksys_read"], count=7
    )
    assert stack_block(count) == (
        "    ksys_read\n"
        "    main\n"
        "    _start\n"
        "    -                dd (42)\n"
        "        7\n"
    )
