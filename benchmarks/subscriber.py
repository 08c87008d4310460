"""The counting subscriber: a raw-socket MQTT 3.1.1 reader in its own process.

No client library: one blocking socket, packets cut from a byte buffer, one ``orjson.loads``
per message. It measured ~250 k small messages/s on this machine, several times what any
gateway under test delivers, so it is never the bottleneck (``python -m
benchmarks.subscriber --selftest`` prints the figure). It understands the three payload
shapes under test: citytwin reports (``{"seq", "properties": {name: {"value"}}}``; per-device
``seq`` gaps are counted), the naive baseline's one message per point (``{"value"}``, topic
``…/<point>``) and ThingsBoard's gateway telemetry (``{device: [{"ts", "values"}]}``). The
latency sentinel (``sentinel``, or ThingsBoard's two words ``r_K``/``r_K+1``) holds the
microseconds (mod 2^31) at which the slave served it; arrival minus that is poll-to-hub latency.

Protocol on stdin/stdout, one line each: ``mark`` → a JSON line of counters since the last
mark (messages, points, latencies in ms, seq gaps, the broker's ``$SYS`` dropped count);
``quit`` ends the process.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import sys
import threading
import time
from typing import Any

import orjson

SYS_DROPPED = "$SYS/broker/publish/messages/dropped"


def _encode_str(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, body: bytes) -> bytes:
    length = len(body)
    header = bytearray([kind])
    while True:
        byte = length % 128
        length //= 128
        header.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(header) + body


class Counter:
    def __init__(self, sentinel_words: int) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.points = 0
        self.bytes = 0
        self.latencies: list[float] = []
        self.last_seq: dict[tuple[str, bool], int] = {}  # (device, replay lane) -> last seq
        self.seen: dict[str, set[int]] = {}  # every seq received per device (cumulative)
        self.devices: set[str] = set()
        self.out_of_order = 0
        self.replayed = 0
        self.replayed_points = 0
        self.broker_dropped = 0
        # ThingsBoard: the sentinel's two words are keys r_K and r_K+1
        self.tb_high = f"r_{sentinel_words}"
        self.tb_low = f"r_{sentinel_words + 1}"

    def on_publish(self, topic: str, payload: bytes, arrived_us: int) -> None:
        if topic.startswith("$SYS/"):
            if topic == SYS_DROPPED:
                self.broker_dropped = int(payload)
            return
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        points = 0
        served: int | None = None
        props = body.get("properties")
        if isinstance(props, dict):  # citytwin report
            points = len(props)
            sentinel = props.get("sentinel")
            if sentinel is not None:
                served = sentinel.get("value")
            device = topic.rsplit("/", 3)[-3]
            self.devices.add(device)
            seq = body.get("seq")
            replay = bool(body.get("replay"))
            if isinstance(seq, int):
                lane = (device, replay)
                last = self.last_seq.get(lane)
                if last is not None and seq <= last:
                    self.out_of_order += 1
                self.last_seq[lane] = seq
                self.seen.setdefault(device, set()).add(seq)
            if replay:
                self.replayed += 1
                self.replayed_points += points
        elif "value" in body:  # naive: one message per point
            points = 1
            self.devices.add(topic.split("/", 2)[1])
            if topic.endswith("/sentinel"):
                served = body["value"]
        else:  # ThingsBoard: {device: [{"ts": .., "values": {..}}]}
            for device, entries in body.items():
                self.devices.add(device)
                if isinstance(entries, list):
                    for entry in entries:
                        values = entry.get("values", {}) if isinstance(entry, dict) else {}
                        points += len(values)
                        high = values.get(self.tb_high)
                        if high is not None and self.tb_low in values:
                            served = (int(high) << 16) | int(values[self.tb_low])
                            points -= 1  # two keys, one point (the uint32 sentinel)
        with self.lock:
            self.messages += 1
            self.points += points
            self.bytes += len(payload)
            if isinstance(served, int | float):
                self.latencies.append(((arrived_us - int(served)) % (1 << 31)) / 1000)

    def mark(self) -> dict[str, Any]:
        with self.lock:
            missing = sum(max(s) - min(s) + 1 - len(s) for s in self.seen.values())
            out = {
                "messages": self.messages, "points": self.points, "bytes": self.bytes,
                "latencies_ms": self.latencies, "seq_missing": missing, "devices": len(self.devices),
                "out_of_order": self.out_of_order, "replayed": self.replayed,
                "replayed_points": self.replayed_points,
                "broker_dropped": self.broker_dropped, "monotonic": time.monotonic(),
            }
            self.messages = self.points = self.bytes = self.replayed = self.replayed_points = 0
            self.latencies = []
            return out


def connect(port: int, topics: list[str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    body = _encode_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 600) + _encode_str(f"bench-counter-{port}")
    sock.sendall(_packet(0x10, body))
    ack = sock.recv(4)
    if len(ack) < 4 or ack[0] != 0x20 or ack[3] != 0:
        raise ConnectionError(f"CONNACK refused: {ack!r}")
    sub = struct.pack("!H", 1) + b"".join(_encode_str(t) + b"\x00" for t in topics)
    sock.sendall(_packet(0x82, sub))
    return sock


def serve(first: socket.socket, port: int, topics: list[str], counter: Counter) -> None:
    """Read forever; when the broker goes away (the recovery scenario), reconnect at once."""
    sock = first
    while True:
        with contextlib.suppress(OSError):
            read_loop(sock, counter)
        while True:
            time.sleep(0.01)
            try:
                sock = connect(port, topics)
                break
            except OSError:
                continue


def read_loop(sock: socket.socket, counter: Counter) -> None:
    buf = bytearray()
    on_publish = counter.on_publish
    recv = sock.recv
    clock = time.time_ns
    while True:
        chunk = recv(1 << 20)
        if not chunk:
            return
        buf += chunk
        arrived = clock() // 1000
        pos, end = 0, len(buf)
        while pos + 2 <= end:
            kind = buf[pos]
            length = 0
            shift = 0
            i = pos + 1
            while i < end:
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            else:
                break
            if i + length > end:
                break
            if kind & 0xF0 == 0x30:
                tlen = (buf[i] << 8) | buf[i + 1]
                start = i + 2 + tlen + (2 if kind & 0x06 else 0)
                on_publish(buf[i + 2:i + 2 + tlen].decode(), bytes(buf[start:i + length]), arrived)
            pos = i + length
        del buf[:pos]


def selftest(port: int) -> None:
    """Publish a flood over a raw socket and report how fast this reader takes it in."""
    counter = Counter(0)
    sock = connect(port, ["selftest/#"])
    time.sleep(0.2)
    threading.Thread(target=read_loop, args=(sock, counter), daemon=True).start()
    pub = socket.create_connection(("127.0.0.1", port))
    pub.sendall(_packet(0x10, _encode_str("MQTT") + bytes([4, 0x02, 0, 60]) + _encode_str("selftest-pub")))
    pub.recv(4)
    n = 200_000
    one = _packet(0x30, _encode_str("selftest/dev/x") + b'{"value":1}')
    started = time.monotonic()
    for _ in range(n // 1000):
        pub.sendall(one * 1000)
    while counter.messages < n and time.monotonic() - started < 20:
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    print(orjson.dumps({"received": counter.messages, "sent": n, "per_s": counter.messages / elapsed}).decode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("topics", nargs="*", default=["#"])
    parser.add_argument("--sentinel-words", type=int, default=0, help="K: ThingsBoard's sentinel keys r_K, r_K+1")
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args()
    if args.selftest:
        selftest(args.port)
        return 0
    counter = Counter(args.sentinel_words)
    topics = [*args.topics, SYS_DROPPED]
    threading.Thread(target=serve, args=(connect(args.port, topics), args.port, topics, counter), daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "mark":
            sys.stdout.write(orjson.dumps(counter.mark()).decode() + "\n")
            sys.stdout.flush()
        elif command == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
