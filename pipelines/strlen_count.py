"""Lesson 14, strlen_count: how often each string is passed to libc strlen().

glibc's strlen is an IFUNC, so the uprobe goes on the implementation its
resolver picks on this CPU (the symbol itself would see no calls). Counts
are printed on Ctrl-C, lowest first, strings escaped as in the tutorial.

    $ flowtrace run pipelines/strlen_count.py     # ls /etc; date
    Tracing strlen()... Hit Ctrl-C to end.
    ^C     COUNT STRING
             1 "for %s in "
    [...]
           384 "()<>;&| \\t\\n"
           860 "utf8"
          1215 "UTF-8"
          1470 "C.UTF-8"
          1520 "C"
          5933 "/usr/lib/locale"
"""

from flowtrace.operators import count
from flowtrace.records import CountRow
from flowtrace.sinks.console import ConsoleSink, TableStyle
from flowtrace.sources.libc import strlen_calls


def row(r: CountRow) -> str:
    text = r.key["string"].encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'{r.count:10d} "{text}"'


pipeline = (
    strlen_calls()
    | count("string")
    | ConsoleSink(
        header="Tracing strlen()... Hit Ctrl-C to end.",
        table=TableStyle(line=row, title=f"{'COUNT':>10} STRING", ascending=True),
    )
)
