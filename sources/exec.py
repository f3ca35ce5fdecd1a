"""Programs executed (bcc's execsnoop), from the execve syscall tracepoints.

At ``syscalls:sys_enter_execve`` the kernel copies up to :data:`MAX_ARGS`
arguments (:data:`ARG_BYTES` - 1 bytes of each) while the old program's
memory still holds them; at ``sys_exit_execve``, in the new program, it
reports them with the result. The parent is the process that forked it
while tracing (``sched:sched_process_fork``), else the one
``/proc/PID/status`` names when the event is read (0 when the process is
gone by then).
"""

from __future__ import annotations

from typing import Annotated, Any

from flowtrace.converted_output import Converted
from flowtrace.events import Event
from flowtrace.kernel_source import KernelSource
from flowtrace.ktypes import Char, comm, ktime_ns, s32, task_comm, task_pid, u8, u32
from flowtrace.outputs import buffer_output
from flowtrace.probes import Param, Probe, Tracepoint

__all__ = ["ARG_BYTES", "MAX_ARGS", "Exec", "exec_calls"]

MAX_ARGS = 8
ARG_BYTES = 40


class Exec(Event, frozen=True):
    """A process called execve: ``args`` its arguments joined by spaces
    (``...`` appended when there were more than :data:`MAX_ARGS`), ``ret``
    the result (0: it runs the new program, ``comm``)."""

    ts: ktime_ns
    pid: u32
    ppid: u32
    ret: s32
    comm: comm
    args: Annotated[str, Char(MAX_ARGS * ARG_BYTES + 4)]


class ExecRecord(Event, frozen=True):
    ts: ktime_ns
    pid: task_pid
    ppid: u32
    ret: s32
    comm: task_comm
    more: u8
    arg0: Annotated[str, Char(ARG_BYTES)]
    arg1: Annotated[str, Char(ARG_BYTES)]
    arg2: Annotated[str, Char(ARG_BYTES)]
    arg3: Annotated[str, Char(ARG_BYTES)]
    arg4: Annotated[str, Char(ARG_BYTES)]
    arg5: Annotated[str, Char(ARG_BYTES)]
    arg6: Annotated[str, Char(ARG_BYTES)]
    arg7: Annotated[str, Char(ARG_BYTES)]


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _execs(batch: list[ExecRecord]) -> list[Exec]:
    out = []
    for r in batch:
        words = [a for a in (r.arg0, r.arg1, r.arg2, r.arg3, r.arg4, r.arg5, r.arg6, r.arg7) if a]
        args = " ".join(words) + (" ..." if r.more else "")
        out.append(Exec(r.ts, r.pid, r.ppid or _parent(r.pid), r.ret, r.comm, args))
    return out


_PRELUDE = f"""\
#define FT_MAX_ARGS {MAX_ARGS}

struct ft_argv {{
    char arg[FT_MAX_ARGS][{ARG_BYTES}];
    u8 more;  // more arguments than were kept
}};

BPF_PERCPU_ARRAY(ft_argv_scratch, struct ft_argv, 1);
BPF_HASH(ft_argvs, u32, struct ft_argv, 10240);  // thread in execve -> its arguments
BPF_TABLE("lru_hash", u32, u32, ft_parents, 10240);  // process -> who forked it
"""

_ENTER = """\
int zero = 0;
struct ft_argv *a = ft_argv_scratch.lookup(&zero);
if (!a)
    return 0;
int done = 0;
#pragma unroll
for (int i = 0; i < FT_MAX_ARGS; i++) {
    a->arg[i][0] = 0;
    if (done)
        continue;
    const char *arg = 0;
    bpf_probe_read_user(&arg, sizeof(arg), (void *)(argv + i * sizeof(arg)));
    if (!arg)
        done = 1;
    else
        bpf_probe_read_user_str(a->arg[i], sizeof(a->arg[i]), arg);
}
a->more = 0;
if (!done) {
    const char *arg = 0;
    bpf_probe_read_user(&arg, sizeof(arg), (void *)(argv + FT_MAX_ARGS * sizeof(arg)));
    a->more = arg != 0;
}
u32 tid = bpf_get_current_pid_tgid();
if (ft_argvs.update(&tid, a) != 0)
    ft_count_lost();
"""

_EXIT = """\
u32 tid = bpf_get_current_pid_tgid();
struct ft_argv *a = ft_argvs.lookup(&tid);
if (!a)
    return 0;  // entered before tracing began
e.ret = ret;
e.more = a->more;
""" + "".join(
    f"__builtin_memcpy(e.arg{i}, a->arg[{i}], sizeof(e.arg{i}));\n" for i in range(MAX_ARGS)
) + """\
ft_argvs.delete(&tid);
u32 *parent = ft_parents.lookup(&e.pid);
if (parent) {
    e.ppid = *parent;
    ft_parents.delete(&e.pid);
}"""


def exec_calls(*, transport: str = "auto") -> KernelSource[Exec]:
    """One :class:`Exec` per execve(2) that returns while tracing."""
    probes = [
        Probe(
            "processes forked",
            Tracepoint("sched", "sched_process_fork"),
            body="ft_parents.update(&child_pid, &parent_pid);",
            params=[Param("parent_pid", "u32"), Param("child_pid", "u32")],
            emits=False,
        ),
        Probe(
            "entry of execve(2)",
            Tracepoint("syscalls", "sys_enter_execve", fields={"argv": "(u64)args->argv"}),
            body=_ENTER,
            params=[Param("argv")],
            emits=False,
        ),
        Probe(
            "return of execve(2)",
            Tracepoint("syscalls", "sys_exit_execve"),
            body=_EXIT,
            params=[Param("ret", "s64")],
        ),
    ]
    output: Any = Converted(buffer_output(transport), ExecRecord, _execs)
    return KernelSource(Exec, *probes, prelude=_PRELUDE, name="execs", output=output)
