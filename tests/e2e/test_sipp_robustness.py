"""Bad input at a running ``sipfleet run`` while SIPp calls go through it: garbage and
the 49 RFC 4475 torture messages from raw sockets. Nothing in flight may fail, and
the proxy must still be up and answering afterwards."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

TORTURE = sorted(harness.TORTURE.glob("*.dat"))
#: One pass over every payload, then a pause; repeated until the calls are done.
PASS_PAUSE_S = 0.05
MAX_PASSES = 400


def _garbage(seed: int = 4475) -> list[bytes]:
    rnd = random.Random(seed)
    head = (
        b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKg\r\n"
        b"From: <sip:g@127.0.0.1>;tag=g\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: garbage\r\n"
        b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    )
    return [
        b"",
        b"\r\n",
        b"\r\n\r\n",
        b"\x00" * 64,
        b"\xff" * 1400,
        bytes(rnd.getrandbits(8) for _ in range(7)),
        bytes(rnd.getrandbits(8) for _ in range(512)),
        bytes(rnd.getrandbits(8) for _ in range(60000)),
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnone\r\n\r\n",
        b"OPTIONS sip:127.0.0.1 SIP/7.0\r\n\r\n",
        head + b"Content-Length: 500\r\n\r\nv=0\r\n",  # body shorter than announced
        head + b"Content-Length: -4\r\n\r\n",
        head + b"Content-Length: 99999999999999999999\r\n\r\n",
        head + b"X-Long: " + b"a" * 20000 + b"\r\nContent-Length: 0\r\n\r\n",
        head + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"Content-Length: 0\r\n\r\n",
        head.replace(b"Via: SIP/2.0/UDP 127.0.0.1:9", b"Via: SIP/2.0/UDP [::1"),
        head.replace(b"INVITE sip:", b"INV\x00ITE sip:") + b"Content-Length: 0\r\n\r\n",
        head.replace(b"Max-Forwards: 70", b"Max-Forwards: 0") + b"Content-Length: 0\r\n\r\n",
    ]


def _payloads() -> list[bytes]:
    return _garbage() + [p.read_bytes() for p in TORTURE]


def _blast_udp(address: tuple[str, int], payloads: list[bytes], stop: threading.Event) -> int:
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        for _ in range(MAX_PASSES):
            if stop.is_set():
                break
            for p in payloads:
                try:
                    s.sendto(p, address)
                    sent += 1
                except OSError:  # a full buffer or an ICMP error from the last pass
                    pass
            try:
                while s.recv(65536):  # drain the proxy's 400s so they do not pile up
                    pass
            except OSError:
                pass
            time.sleep(PASS_PAUSE_S)  # sleep-ok: pacing the garbage sender
    return sent


def _blast_tcp(address: tuple[str, int], payloads: list[bytes], stop: threading.Event) -> int:
    """Each payload on a fresh connection, plus one connection that stalls half-way
    through a message and one that streams them all back to back."""
    sent = 0
    stalled = socket.create_connection(address, timeout=2)
    stalled.sendall(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1")
    try:
        for _ in range(MAX_PASSES):
            if stop.is_set():
                break
            for p in payloads:
                try:
                    with socket.create_connection(address, timeout=2) as c:
                        c.sendall(p)
                        sent += 1
                except OSError:  # reset by the proxy after a framing error: fine
                    pass
            try:
                with socket.create_connection(address, timeout=2) as c:
                    c.sendall(b"".join(payloads))
            except OSError:
                pass
            time.sleep(PASS_PAUSE_S)  # sleep-ok: pacing the garbage sender
    finally:
        stalled.close()
    return sent


def _answers_options(port: int, transport: str) -> bool:
    """The proxy still answers: an OPTIONS with Max-Forwards 0 gets a final response."""
    msg = (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{{lport}};branch=z9hG4bKalive;rport\r\n"
        "From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1>\r\n"
        "Call-ID: alive-probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 0\r\nContent-Length: 0\r\n\r\n"
    )
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(3)
        s.bind(("127.0.0.1", 0))
        data = msg.replace("{lport}", str(s.getsockname()[1])).encode()
        if transport == "udp":
            s.sendto(data, ("127.0.0.1", port))
        else:
            s.connect(("127.0.0.1", port))
            s.sendall(data)
        try:
            return s.recv(65536).startswith(b"SIP/2.0 ")
        except OSError:
            return False


def test_every_torture_vector_is_sent():
    assert len(TORTURE) == 49


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_answers_options_on_each_listener(sipp_env, transport):
    """The smallest exchange: one OPTIONS (Max-Forwards 0) answered on each transport."""
    proxy = sipp_env.proxy(["sip:127.0.0.1:9"])

    assert _answers_options(proxy.port, transport)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_garbage_and_torture_while_calls_run(sipp_env, transport):
    a = sipp_env.uas("uas_rr.xml", transport)
    b = sipp_env.uas("uas_rr.xml", transport)
    proxy = sipp_env.proxy([a, b])
    payloads = _payloads()
    stop = threading.Event()
    blast = _blast_udp if transport == "udp" else _blast_tcp
    sent: list[int] = []
    thread = threading.Thread(
        target=lambda: sent.append(blast(("127.0.0.1", proxy.port), payloads, stop)), daemon=True
    )

    uac = sipp_env.start_uac("uac_rr.xml", proxy, calls=400, rate=200, transport=transport)
    thread.start()
    result = uac.wait()
    stop.set()
    thread.join(timeout=10)

    assert sent and sent[0] >= len(payloads), f"the bad input was not all sent: {sent}"
    assert (result.successful, result.failed) == (400, 0), result.summary()
    assert proxy.alive(), "sipfleet died"
    assert _answers_options(proxy.port, transport), "sipfleet no longer answers"
    assert "Traceback" not in proxy.stderr_path.read_text(errors="replace")
