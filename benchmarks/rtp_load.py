"""
A bounded RTP load generator for the relay benchmark (loopback only,
standard library only), driven over its standard input and output with
one JSON object per line, so that it runs in a process (and on a core) of
its own while the relay under test runs in another.

Commands (each answered with one line):

    {"bind": N}
        Bind N stream pairs on 127.0.0.1: two UDP sockets per call (the
        caller's and the callee's media). Answer: {"ports": [[a, b], ...]}.
    {"run": {"targets": [[[hostA, portA], [hostB, portB]], ...], "seconds": S, "warmup": W}}
        For W + S seconds, each socket sends a G.711 packet (12-byte RTP
        header + 160 bytes) every 20 ms to its target: socket A of call i
        to targets[i][0] (where the caller must send), socket B to
        targets[i][1]. Sends are spread over the 20 ms period. Every packet
        carries its call, direction and send time; each socket counts what
        it receives. Packets sent during the last S seconds are measured:
        {"sent", "received", "lost", "late_sends", "rate", "latency_us":
        {"median", "p90", "p99", "p999", "max"}, "wrong"}: the latency is
        one-way, from the send to the receiving socket's read, on one
        clock. Targets must be loopback.
    {"close": true}
        Close the sockets.

Run alone it exits at end of input.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import sys
import time

PERIOD = 0.020
PAYLOAD = b"\xd5" * (160 - 17)  # 160 bytes after the RTP header, as G.711 at 20 ms
# RTP header, then call index, direction (0: A->B, 1: B->A), send time (ns), sequence check.
_PACKET = struct.Struct("!BBHII" + "IBQI")


class Load:
    def __init__(self) -> None:
        self.sockets: list[tuple[socket.socket, socket.socket]] = []

    def bind(self, count: int) -> list[list[int]]:
        self.close()
        ports = []
        for _ in range(count):
            pair = []
            for _side in range(2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                pair.append(sock)
            self.sockets.append((pair[0], pair[1]))
            ports.append([pair[0].getsockname()[1], pair[1].getsockname()[1]])
        return ports

    def close(self) -> None:
        for a, b in self.sockets:
            a.close()
            b.close()
        self.sockets = []

    def run(self, targets: list[list[list[object]]], seconds: float, warmup: float) -> dict[str, object]:
        if len(targets) != len(self.sockets):
            raise ValueError("one target pair per bound call")
        senders: list[tuple[socket.socket, tuple[str, int], int, int]] = []
        for index, ((a, b), (toA, toB)) in enumerate(zip(self.sockets, targets, strict=True)):
            for sock, target, direction in ((a, toA, 0), (b, toB, 1)):
                host, port = str(target[0]), int(target[1])  # type: ignore[call-overload]
                if not ipaddress.ip_address(host).is_loopback:
                    raise ValueError(f"{host}: loopback targets only")
                senders.append((sock, (host, port), index, direction))
        poller = select.epoll()
        byFD: dict[int, socket.socket] = {}
        for a, b in self.sockets:
            for sock in (a, b):
                poller.register(sock.fileno(), select.EPOLLIN)
                byFD[sock.fileno()] = sock
        count = len(senders)
        seq = [0] * count
        start = time.monotonic()
        measureFrom = start + warmup
        stopAt = measureFrom + seconds
        measureFromNS = int(measureFrom * 1e9)
        stopAtNS = int(stopAt * 1e9)
        sent = received = lateSends = wrong = 0
        latencies: list[int] = []
        nextIndex = 0
        period = PERIOD
        monotonic = time.monotonic
        monotonicNS = time.monotonic_ns
        pack = _PACKET.pack
        unpack = _PACKET.unpack_from
        size = _PACKET.size
        try:
            while True:
                now = monotonic()
                if now >= stopAt:
                    break
                # The senders due by now: sender k sends at start + (cycle + k / count) * period.
                elapsed = now - start
                due = int(elapsed / period * count) + 1
                if due - nextIndex > count:
                    lateSends += due - nextIndex - count
                    nextIndex = due - count
                while nextIndex < due:
                    k = nextIndex % count
                    sock, target, index, direction = senders[k]
                    s = seq[k] = (seq[k] + 1) & 0xFFFF
                    sentAt = monotonicNS()
                    packet = pack(0x80, 8, s, s * 160, 0x1000 + k, index, direction, sentAt, s) + PAYLOAD
                    try:
                        sock.sendto(packet, target)
                    except BlockingIOError:
                        pass
                    if sentAt >= measureFromNS:
                        sent += 1
                    nextIndex += 1
                nextDue = start + (nextIndex / count) * period
                timeout = max(0.0, nextDue - monotonic())
                for fd, _event in poller.poll(timeout):
                    sock = byFD[fd]
                    while True:
                        try:
                            data = sock.recv(2048)
                        except BlockingIOError:
                            break
                        arrived = monotonicNS()
                        if len(data) < size:
                            wrong += 1
                            continue
                        fields = unpack(data)
                        sentAt = fields[7]
                        if sentAt >= measureFromNS:
                            received += 1
                            latencies.append(arrived - sentAt)
            # Let the packets in flight arrive.
            grace = monotonic() + 0.3
            while monotonic() < grace:
                for fd, _event in poller.poll(0.05):
                    sock = byFD[fd]
                    while True:
                        try:
                            data = sock.recv(2048)
                        except BlockingIOError:
                            break
                        if len(data) >= size:
                            fields = unpack(data)
                            if measureFromNS <= fields[7] < stopAtNS:
                                received += 1
                                latencies.append(monotonicNS() - fields[7])
        finally:
            poller.close()
        latencies.sort()

        def percentile(p: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000.0

        return {
            "sent": sent,
            "received": received,
            "lost": max(0, sent - received),
            "late_sends": lateSends,
            "rate": sent / seconds,
            "latency_us": {
                "median": percentile(0.5),
                "p90": percentile(0.9),
                "p99": percentile(0.99),
                "p999": percentile(0.999),
                "max": percentile(1.0),
            },
            "wrong": wrong,
        }


def main() -> int:
    load = Load()
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            if "bind" in command:
                answer: dict[str, object] = {"ports": load.bind(int(command["bind"]))}
            elif "run" in command:
                run = command["run"]
                answer = load.run(run["targets"], float(run["seconds"]), float(run.get("warmup", 1.0)))
            elif "close" in command:
                load.close()
                answer = {"closed": True}
            else:
                answer = {"error": f"unknown command {line.strip()!r}"}
        except Exception as e:  # reported to the driver, which stops
            answer = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    load.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
