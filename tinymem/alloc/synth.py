"""Synthetic microcontroller allocation traces, reproducible from a seed: what the benchmark and
the tests replay besides traces recorded from firmware.

- sensor_queue: a bounded message queue between a sampling task and a radio task: small
  fixed-layout messages, occasional batch buffers, a few long-lived objects.
- net_stack: a small TCP/IP-like stack: long-lived connection blocks, packet buffers of
  MTU-ish sizes, short-lived headers, reassembly buffers that grow by realloc.
- json_tree: parse-and-discard documents: many small nodes and strings, arrays that grow by
  doubling, all freed when the document is done.
- random_sizes: sizes uniform over 1..2048 with random lifetimes: no structure to exploit.
"""
from __future__ import annotations

import random
from collections import deque

from .trace import ALLOC, CALLOC, FREE, REALLOC, Trace, _Builder


class _Gen:
    def __init__(self, name: str, seed: int):
        self.rng = random.Random(f"{name}:{seed}")
        self.b = _Builder(f"{name}(seed={seed})")
        self.serial = 0
        self.line = 0

    def alloc(self, size: int, op: int = ALLOC) -> str:
        self.serial += 1
        self.line += 1
        name = f"b{self.serial}"
        self.b.add(self.line, op, name, size, 0)
        return name

    def free(self, name: str) -> None:
        self.line += 1
        self.b.add(self.line, FREE, name, 0, 0)

    def realloc(self, name: str, size: int) -> None:
        self.line += 1
        self.b.add(self.line, REALLOC, name, size, 0)

    def done(self, live) -> Trace:
        for name in list(live):
            self.free(name)
        return self.b.trace


def sensor_queue(seed: int = 1, ops: int = 20000) -> Trace:
    g = _Gen("sensor_queue", seed)
    r = g.rng
    config = [g.alloc(r.choice((96, 160, 256))) for _ in range(4)]
    queue: deque[str] = deque()
    depth = 20
    while g.line < ops:
        depth = min(60, max(4, depth + r.choice((-1, 0, 1))))
        if len(queue) < depth and r.random() < 0.55:
            size = r.choice((16, 16, 24, 24, 24, 32, 48, 64)) if r.random() < 0.95 else r.choice((256, 512))
            queue.append(g.alloc(size, CALLOC if r.random() < 0.2 else ALLOC))
        elif queue:
            g.free(queue.popleft())
    return g.done(list(queue) + config)


def net_stack(seed: int = 1, ops: int = 20000) -> Trace:
    g = _Gen("net_stack", seed)
    r = g.rng
    conns: list[str] = []
    packets: deque[str] = deque()
    headers: list[str] = []
    reasm: dict[str, int] = {}
    while g.line < ops:
        x = r.random()
        if x < 0.03 and len(conns) < 8:
            conns.append(g.alloc(120, CALLOC))
        elif x < 0.05 and conns:
            g.free(conns.pop(r.randrange(len(conns))))
        elif x < 0.40 and len(packets) < 12:
            packets.append(g.alloc(r.choice((64, 128, 128, 576, 1500))))
        elif x < 0.70 and packets:
            g.free(packets.popleft())
        elif x < 0.90:
            if len(headers) < 16:
                headers.append(g.alloc(r.randint(20, 60)))
            else:
                g.free(headers.pop(r.randrange(len(headers))))
        elif reasm and r.random() < 0.6:
            name = r.choice(list(reasm))
            if reasm[name] >= 2048:
                g.free(name)
                del reasm[name]
            else:
                reasm[name] *= 2
                g.realloc(name, reasm[name])
        elif len(reasm) < 2:
            reasm[g.alloc(256)] = 256
    return g.done(conns + list(packets) + headers + list(reasm))


def json_tree(seed: int = 1, ops: int = 20000) -> Trace:
    g = _Gen("json_tree", seed)
    r = g.rng
    while g.line < ops:
        doc: list[str] = []
        arrays: dict[str, int] = {}
        for _ in range(r.randint(20, 150)):
            x = r.random()
            if x < 0.5:
                doc.append(g.alloc(r.choice((24, 32, 40))))
            elif x < 0.85:
                doc.append(g.alloc(r.randint(4, 64)))
            elif arrays and r.random() < 0.7 and min(arrays.values()) < 512:
                name = r.choice([a for a, n in arrays.items() if n < 512])  # 128 pointers at most
                arrays[name] *= 2
                g.realloc(name, arrays[name])
            else:
                arrays[g.alloc(32)] = 32
        order = doc + list(arrays)
        if r.random() < 0.5:
            order.reverse()
        for name in order:
            g.free(name)
    return g.b.trace


def random_sizes(seed: int = 1, ops: int = 20000) -> Trace:
    g = _Gen("random_sizes", seed)
    r = g.rng
    live: list[str] = []
    while g.line < ops:
        if live and (len(live) >= 40 or r.random() < 0.5):
            g.free(live.pop(r.randrange(len(live))))
        else:
            live.append(g.alloc(r.randint(1, 2048)))
    return g.done(live)


WORKLOADS = {"sensor_queue": sensor_queue, "net_stack": net_stack, "json_tree": json_tree,
             "random_sizes": random_sizes}
