"""Network namespaces for kernel tests: two namespaces joined by a veth pair.

Addresses live only on the pair's two ends inside the namespaces the test
made (10.200.0.1/24 and fd00::1/64 on the client side, .2 and ::2 on the
server side), so nothing outside the test can reach them or be disturbed.
Both namespaces (and with them the veth pair) are removed on every exit.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from kernelrun import bpf_program
from workloads import PYTHON

from flowtrace.packet_points import Xdp

PEER = str(Path(__file__).with_name("programs") / "net_peer.py")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class VethPair:
    """Namespaces ``client`` and ``server``, joined by interfaces
    ``client_if`` and ``server_if`` (each in its own namespace)."""

    client: str
    server: str
    client_if: str
    server_if: str
    client4: str = "10.200.0.1"
    server4: str = "10.200.0.2"
    client6: str = "fd00::1"
    server6: str = "fd00::2"

    def peer(self, side: str, mode: str, *args: object) -> Peer:
        """``tests/programs/net_peer.py MODE ARGS`` in namespace ``side``."""
        return Peer(side, mode, [str(a) for a in args])


@contextmanager
def veth_pair() -> Iterator[VethPair]:
    tag = uuid.uuid4().hex[:6]
    pair = VethPair(f"ft-{tag}-c", f"ft-{tag}-s", f"ft{tag}c", f"ft{tag}s")
    try:
        ip("netns", "add", pair.client)
        ip("netns", "add", pair.server)
        ip("link", "add", pair.client_if, "type", "veth", "peer", "name", pair.server_if)
        ip("link", "set", pair.client_if, "netns", pair.client)
        ip("link", "set", pair.server_if, "netns", pair.server)
        for ns, dev, v4, v6 in [
            (pair.client, pair.client_if, pair.client4, pair.client6),
            (pair.server, pair.server_if, pair.server4, pair.server6),
        ]:
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        for ns in (pair.client, pair.server):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert tag not in left, left


class Peer:
    """A net_peer.py process in a namespace: waits for :meth:`go`."""

    def __init__(self, namespace: str, mode: str, args: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, PYTHON, PEER, mode, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid  # ip netns exec runs the command in its own process

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def finish(self, timeout: float = 60) -> list[str]:
        """Wait for it to end well; the lines it printed that were not read."""
        out, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, self.process.returncode
        return out.splitlines()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_DROPPER = """\
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>

BPF_HASH(dropped_once, u32, u8, 4096);  // sequence numbers dropped once already
// [0]: SYNs dropped, [1]: data segments dropped,
// [2]: SYNs sent again, [3]: data segments sent again (each copy after the first),
// [4]: SYN retransmissions traced, [5]: other retransmissions traced
BPF_ARRAY(drops, u64, 6);

int drop_first_copies(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct tcphdr *tcp;
    u32 length;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    if (eth->h_proto == htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
            return XDP_PASS;
        tcp = (void *)ip + ip->ihl * 4;
        length = ntohs(ip->tot_len) - ip->ihl * 4;
    } else if (eth->h_proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
            return XDP_PASS;
        tcp = (void *)(ip6 + 1);
        length = ntohs(ip6->payload_len);
    } else {
        return XDP_PASS;
    }
    if ((void *)(tcp + 1) > end || tcp->dest != htons(PORT))
        return XDP_PASS;
    int syn = tcp->syn && !tcp->ack;
    if (!syn && length == tcp->doff * 4)
        return XDP_PASS;  // no data: an ACK or a FIN
    u32 seq = tcp->seq;
    u8 yes = 1;
    int kind = syn ? 0 : 1;
    u64 *count;
    if (dropped_once.lookup(&seq)) {  // a copy sent again passes
        kind += 2;
        count = drops.lookup(&kind);
        if (count)
            (*count)++;
        return XDP_PASS;
    }
    dropped_once.update(&seq, &yes);
    count = drops.lookup(&kind);
    if (count)
        (*count)++;
    return XDP_DROP;
}

// what the kernel hands a program on tcp:tcp_retransmit_skb for this port
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) {
    if (args->dport != PORT)
        return 0;
    int kind = args->state == 2 ? 4 : 5;  // 2: TCP_SYN_SENT
    u64 *count = drops.lookup(&kind);
    if (count)
        __sync_fetch_and_add(count, 1);
    return 0;
}
"""


class Wire(NamedTuple):
    """What the dropper saw of the segments sent to its port, and the
    retransmissions to it that the kernel handed to a BPF program."""

    syns_dropped: int
    data_dropped: int
    syns_resent: int  # copies after the first: each is one retransmission
    data_resent: int
    syns_traced: int  # tcp:tcp_retransmit_skb hits in state SYN_SENT
    data_traced: int  # the other hits


@contextmanager
def first_copies_dropped(pair: VethPair, port: int) -> Iterator[Callable[[], Wire]]:
    """An XDP program on the server's interface that drops the first copy
    of each SYN and each data segment sent to ``port``; every later copy
    passes. Usually each is retransmitted once, but a retransmission whose
    acknowledgement comes late (a loaded machine) is sent again: the
    function it yields counts both, so a test expects what the wire saw.

    The same program counts the ``tcp:tcp_retransmit_skb`` hits for
    ``port`` that the kernel hands to BPF: now and then (about one test in
    thirty here) the kernel sends a retransmission without running the
    programs on that tracepoint and counts the skip nowhere, so a tracer
    is expected to report exactly what this independent count saw."""
    fn = "drop_first_copies"
    with bpf_program(_DROPPER.replace("PORT", str(port))) as bpf:
        point = Xdp(pair.server_if, pair.server)
        try:
            point.attach(bpf, fn)
            drops = bpf[b"drops"]
            yield lambda: Wire(*(drops[i].value for i in range(6)))
        finally:
            point.detach(bpf, fn)
