#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris / libFuzzer) of what a peer can reach:
the parser, the stream framer and the whole proxy core with its Gate.

    .venv/bin/pip install atheris
    .venv/bin/python scripts/build_accel.py --clean      # pure Python: atheris sees its coverage
    .venv/bin/python bench/fuzz_atheris.py -max_total_time=60
    .venv/bin/python bench/fuzz_atheris.py -runs=200000 CORPUS_DIR

Each input is split into up to three messages from two sources, fed to a
fresh core (deterministic: a crash input reproduces), then 200 s of timers
run; it is a crash when anything but BadMessage escapes the parser or the
framer, when the core raises, when something the core sends does not
parse, or when a transaction outlives its timers. Without a corpus
directory, a temporary one starts from the RFC 4475 torture messages.
libFuzzer's own flags pass through (-runs, -max_total_time, -jobs ...); its
last line (``#N DONE cov: ... exec/s: ...``) gives the runs and the rate; a
crash leaves ``crash-*`` (put it in tests/vectors/fuzz/, where
tests/security/test_fuzz_regressions.py replays it).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from sipfleet.proxy.core import Proxy, ProxySettings
    from sipfleet.proxy.net import Listener, Peer
    from sipfleet.proxy.router import RoundRobinRouter
    from sipfleet.security.gate import Gate
    from sipfleet.security.settings import SecuritySettings
    from sipfleet.sip.errors import BadMessage
    from sipfleet.sip.framing import StreamFramer
    from sipfleet.sip.message import parse

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "tests" / "vectors" / "rfc4475"
LISTENERS = [Listener(0, "udp", "127.0.0.1", 5060), Listener(1, "tcp", "127.0.0.1", 5060)]
PEERS = [Peer(0, "127.0.0.2", 5080), Peer(0, "127.0.0.1", 5070), Peer(1, "127.0.0.2", 40000)]


class _Sink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, peer: Peer, data: bytes) -> None:
        self.sent.append(data)


def one(data: bytes) -> None:
    try:
        parse(data)
    except BadMessage:
        pass
    framer = StreamFramer(4096)
    try:
        framer.feed(data[: len(data) // 2])
        framer.feed(data[len(data) // 2 :])
    except BadMessage:
        pass
    fdp = atheris.FuzzedDataProvider(data)
    sink = _Sink()
    proxy = Proxy(LISTENERS, sink, RoundRobinRouter(["sip:127.0.0.1:5070"]), ProxySettings())
    if fdp.ConsumeBool():
        proxy.gate = Gate(SecuritySettings(pike_density=1000))
        proxy.gate.set_backends(["127.0.0.1"])
    now = 1000.0
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        peer = PEERS[fdp.ConsumeIntInRange(0, len(PEERS) - 1)]
        size = fdp.ConsumeIntInRange(0, 2048)
        proxy.receive(fdp.ConsumeBytes(size), peer, now)
        now += fdp.ConsumeIntInRange(0, 100) / 10
        proxy.handle_timer(now)
    for _ in range(100):
        now += 2.0
        proxy.handle_timer(now)
    for out in sink.sent:
        parse(out)  # what we send must parse
    if proxy.server_txns or proxy.client_txns:
        raise AssertionError("a transaction outlived its timers")


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="sipfleet-fuzz-"))
        for p in SEEDS.glob("*.dat"):
            shutil.copy(p, corpus / p.name)
        argv.append(str(corpus))
    atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
