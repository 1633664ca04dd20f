"""
A bounded STUN Binding load generator (UDP, loopback targets only).

Keeps a window of Binding requests in flight and checks every response:
success class, the transaction ID of a request in flight, an
XOR-MAPPED-ADDRESS equal to the generator's own address, a valid FINGERPRINT
when present. Prints the rate of correct responses and the number of wrong
ones.

    python benchmarks/stun_load.py 127.0.0.1:34780 --count 1000000 --duration 20

The first response is parsed attribute by attribute; over IPv4 the others
must then match it byte for byte but for the transaction ID and a
FINGERPRINT that is checked again (the server's answer to the same source
differs in nothing else), which keeps the generator faster than the server.

Exit status 1 when any answer was wrong or nothing was answered.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time
import zlib

MAGIC = b"\x21\x12\xa4\x42"
FINGERPRINT_XOR = 0x5354554E
_TYPE_LENGTH = struct.Struct("!HH")
_INDEX = struct.Struct("!I")


def parseTarget(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"{host}: this generator only targets loopback addresses")
    return host, int(port)


def xorMapped(local: tuple[str, int], transactionID: bytes) -> bytes:
    """
    The XOR-MAPPED-ADDRESS value naming C{local}.
    """
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    packed = socket.inet_pton(family, local[0])
    pad = int.from_bytes((MAGIC + transactionID)[: len(packed)], "big")
    xored = (int.from_bytes(packed, "big") ^ pad).to_bytes(len(packed), "big")
    return struct.pack("!BBH", 0, 1 if len(packed) == 4 else 2, local[1] ^ 0x2112) + xored


def fullCheck(data: bytes, local: tuple[str, int]) -> bool:
    """
    Whether C{data} is a Binding success response naming C{local}, with a
    FINGERPRINT, if any, that is last and valid.
    """
    if len(data) < 20 or data[0:2] != b"\x01\x01" or data[4:8] != MAGIC:
        return False
    if _TYPE_LENGTH.unpack_from(data, 0)[1] + 20 != len(data):
        return False
    expected = xorMapped(local, data[8:20])
    offset = 20
    mapped = False
    while offset + 4 <= len(data):
        attributeType, length = _TYPE_LENGTH.unpack_from(data, offset)
        value = data[offset + 4 : offset + 4 + length]
        if attributeType == 0x0020:
            if value != expected:
                return False
            mapped = True
        elif attributeType == 0x8028:
            if offset + 8 != len(data) or zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR != int.from_bytes(value, "big"):
                return False
        offset += 4 + length + (-length & 3)
    return mapped and offset == len(data)


def run(target: tuple[str, int], count: int, duration: float, window: int, attributes: bool) -> dict[str, float | int]:
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.connect(target)
    local = sock.getsockname()[:2]
    prefix = os.urandom(8)
    if attributes:
        # SOFTWARE and FINGERPRINT, as most clients send: the server's general path.
        software = b"aetasip-bench"
        body = struct.pack("!HH", 0x8022, len(software)) + software + bytes(-len(software) & 3)
        head = struct.pack("!HH", 0x0001, len(body) + 8) + MAGIC + prefix
    else:
        body = b""
        head = b"\x00\x01\x00\x00" + MAGIC + prefix
    fingerprintHead = struct.pack("!HH", 0x8028, 4)

    def request(index: int) -> bytes:
        data = head + _INDEX.pack(index) + body
        if attributes:
            data += fingerprintHead + _INDEX.pack(zlib.crc32(data) ^ FINGERPRINT_XOR)
        return data

    # By index (the last 4 bytes of the transaction ID): 1 in flight, 2 given
    # up after a timeout, 0 not sent or answered.
    pending = bytearray(count)
    giveUp = bytes.maketrans(b"\x01", b"\x02")
    template: tuple[bytes, bytes] | None = None
    sent = good = wrong = late = 0
    sock.settimeout(0.2)
    send = sock.send
    recv = sock.recv
    crc32 = zlib.crc32
    start = time.perf_counter()
    deadline = start + duration
    last = start
    inFlight = 0
    for _ in range(min(window, count)):
        pending[sent] = 1
        send(request(sent))
        sent += 1
        inFlight += 1
    while inFlight:
        try:
            data = recv(2048)
        except TimeoutError:
            # Lost in a full buffer: give those up and refill the window.
            inFlight = 0
            pending = pending.translate(giveUp)
            if sent >= count or time.perf_counter() > deadline:
                break
            for _ in range(min(window, count - sent)):
                pending[sent] = 1
                send(request(sent))
                sent += 1
                inFlight += 1
            continue
        index = _INDEX.unpack_from(data, 16)[0] if len(data) >= 20 and data[8:16] == prefix else count
        if index < count and pending[index] == 2:
            late += 1
            continue
        if index < count and pending[index]:
            pending[index] = 0
            inFlight -= 1
            if template is not None:
                correct = (
                    data[:8] == template[0]
                    and data[20:-4] == template[1]
                    and crc32(data[:-8]) ^ FINGERPRINT_XOR == _INDEX.unpack_from(data, len(data) - 4)[0]
                )
            else:
                correct = fullCheck(data, local)
                if correct and family == socket.AF_INET and data[-8:-4] == fingerprintHead:
                    template = (data[:8], data[20:-4])
        else:
            correct = False
        if correct:
            good += 1
        else:
            wrong += 1
        if sent < count and (sent & 1023 or time.perf_counter() < deadline):
            pending[sent] = 1
            send(request(sent))
            sent += 1
            inFlight += 1
        last = time.perf_counter()
    elapsed = last - start
    return {
        "sent": sent,
        "responses": good,
        "wrong": wrong,
        "lost": sent - good - wrong - late,
        "late": late,
        "seconds": round(elapsed, 3),
        "responses_per_second": round(good / elapsed) if elapsed > 0 else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=parseTarget, help="HOST:PORT of the STUN server, a loopback address")
    parser.add_argument("--count", type=int, default=1000000, help="requests to send at most")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to send for at most")
    parser.add_argument("--window", type=int, default=64, help="requests in flight")
    parser.add_argument(
        "--attributes", action="store_true", help="send SOFTWARE and FINGERPRINT instead of empty requests"
    )
    options = parser.parse_args()
    result = run(options.target, options.count, options.duration, options.window, options.attributes)
    print(json.dumps(result))
    sys.exit(1 if result["wrong"] or not result["responses"] else 0)


if __name__ == "__main__":
    main()
