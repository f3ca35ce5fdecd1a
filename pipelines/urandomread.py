"""Lesson 12, urandomread: each read of /dev/urandom and the bits it got.

The random:urandom_read tracepoint is gone from modern kernels; the source
uses it where it exists, else the kernel's urandom read function, else
follows descriptors opened on /dev/urandom from open to read in the kernel
(see flowtrace.sources.urandom). Shown with dd if=/dev/urandom of=/dev/null
bs=8k count=5 running.

    $ flowtrace run pipelines/urandomread.py
    TIME(s)            COMM             PID    GOTBITS
    2696.526086927     dd               26801  65536
    2696.526879439     dd               26801  65536
    2696.526906619     dd               26801  65536
    2696.526922133     dd               26801  65536
    2696.526937556     dd               26801  65536
"""

from flowtrace.sinks.console import Column, ConsoleSink
from flowtrace.sources.urandom import UrandomRead, urandom_reads

columns: list[Column[UrandomRead]] = [
    Column("TIME(s)", lambda e: e.ts / 1e9, 18, ".9f"),
    Column("COMM", lambda e: e.comm, 16),
    Column("PID", lambda e: e.pid, 6),
    Column("GOTBITS", lambda e: e.got_bits),
]

pipeline = urandom_reads() | ConsoleSink(columns)
