"""flowtrace benchmarks: flowtrace against the tutorial's bcc loops and
bpftrace, on the same workload, in the same run.

Run from the repository root, as root::

    .venv/bin/python -m bench            # N = 1,000,000, 3 rounds
    .venv/bin/python -m bench --help     # N, rate, rounds, contenders, output

Pieces:

* ``loadgen.c``: the workload, N ``getppid(2)`` syscalls after a go line;
  :mod:`bench.loadgen` compiles it with gcc (cached) and drives it.
* :mod:`bench.workload`: the one record every contender emits (the same
  32 bytes, the same in-kernel pid filter), and the expected answers.
* :mod:`bench.contenders`: one module per contender, each run in its own
  process so CPU time and peak RSS are its own; :mod:`bench.child` is the
  protocol they speak with the harness.
* :mod:`bench.harness`: runs every contender against the workload, measures,
  checks the accounting, prints the tables and writes JSON to bench/results/.
* :mod:`bench.profile`: where a flowtrace contender's CPU goes (py-spy).
"""
