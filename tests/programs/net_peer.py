"""One side of a network workload, run inside a test's network namespace.

    net_peer.py MODE ARGS...

Every mode names its process (comm) after itself, waits for a line on
stdin, then does exactly what it says and prints what the test checks:

  server ADDR PORT N REPLY      listen, print "listening"; N times: accept,
                                read to EOF, send REPLY bytes, close
  client ADDR PORT N SEND       N times: connect, send SEND bytes, shut down
                                writing, read to EOF, close; prints per
                                connection "LPORT RECEIVED"
  echo-server ADDR PORT         listen, print "listening"; accept one
                                connection, echo until EOF, close
  messages ADDR PORT N SIZE     connect, print LPORT; N times: send SIZE
                                bytes, read SIZE echoed back, acknowledge
                                at once; close
  http-server ADDR PORT N       listen, print "listening"; answer N HTTP
                                requests (any method) with 200, one per connection
  http-client ADDR PORT M:P...  one request per METHOD:PATH, each on its own
                                connection, reading the whole response
  datagrams ADDR PORT N         send N UDP datagrams of 8 bytes
  pings ADDR N                  send N ICMP echo requests 50 ms apart;
                                print the number of replies received
"""

from __future__ import annotations

import ctypes
import http.client
import http.server
import socket
import struct
import sys
import time
from collections.abc import Callable


def name_process(name: str) -> None:
    prctl = ctypes.CDLL(None).prctl
    prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def listening(address: str, port: int) -> socket.socket:
    listener = socket.socket(family(address), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(64)
    print("listening", flush=True)
    return listener


def read_all(sock: socket.socket) -> int:
    total = 0
    while chunk := sock.recv(65536):
        total += len(chunk)
    return total


def server(address: str, port: str, n: str, reply: str) -> None:
    with listening(address, int(port)) as listener:
        for _ in range(int(n)):
            conn, _ = listener.accept()
            with conn:
                read_all(conn)
                conn.sendall(b"r" * int(reply))


def client(address: str, port: str, n: str, send: str) -> None:
    for _ in range(int(n)):
        with socket.create_connection((address, int(port)), timeout=10) as conn:
            conn.sendall(b"s" * int(send))
            conn.shutdown(socket.SHUT_WR)
            received = read_all(conn)
            print(conn.getsockname()[1], received, flush=True)


def echo_server(address: str, port: str) -> None:
    with listening(address, int(port)) as listener:
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(65536):
                conn.sendall(chunk)


def messages(address: str, port: str, n: str, size: str) -> None:
    with socket.create_connection((address, int(port)), timeout=20) as conn:
        print(conn.getsockname()[1], flush=True)
        for i in range(int(n)):
            message = bytes([65 + i % 26]) * int(size)
            conn.sendall(message)
            got = b""
            while len(got) < len(message):
                got += conn.recv(len(message) - len(got))
            assert got == message
            # acknowledge the echo now, by itself: an acknowledgement riding
            # on the next message would share that message's fate
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            time.sleep(0.01)  # the workload's pacing between messages


class AnyMethod(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def __getattr__(self, name: str) -> object:
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        pass


def http_server(address: str, port: str, n: str) -> None:
    class Server(http.server.HTTPServer):
        address_family = family(address)

    with Server((address, int(port)), AnyMethod) as httpd:
        print("listening", flush=True)
        for _ in range(int(n)):
            httpd.handle_request()


def http_client(address: str, port: str, *requests: str) -> None:
    for request in requests:
        method, _, path = request.partition(":")
        conn = http.client.HTTPConnection(address, int(port), timeout=10)
        conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
        conn.getresponse().read()
        conn.close()


def datagrams(address: str, port: str, n: str) -> None:
    with socket.socket(family(address), socket.SOCK_DGRAM) as sock:
        for i in range(int(n)):
            sock.sendto(i.to_bytes(8, "big"), (address, int(port)))


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return int(~(total + (total >> 16)) & 0xFFFF)


def pings(address: str, n: str) -> None:
    ident = 0x4654
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(0.05)
        for seq in range(int(n)):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            sock.sendto(struct.pack("!BBHHH", 8, 0, checksum(header), ident, seq), (address, 0))
            deadline = time.monotonic() + 0.05
            while time.monotonic() < deadline:
                try:
                    packet = sock.recv(1500)
                except TimeoutError:
                    break
                kind, _, _, got_ident, got_seq = struct.unpack("!BBHHH", packet[20:28])
                if (kind, got_ident, got_seq) == (0, ident, seq):
                    replies += 1
                    break
    print(replies, flush=True)


MODES: dict[str, Callable[..., None]] = {
    "server": server,
    "client": client,
    "echo-server": echo_server,
    "messages": messages,
    "http-server": http_server,
    "http-client": http_client,
    "datagrams": datagrams,
    "pings": pings,
}

if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    name_process(mode)
    sys.stdin.readline()
    MODES[mode](*args)
