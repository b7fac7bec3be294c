"""SIP over TLS: Kamailio as the TLS carrier, handshake failures, certificate reload.

The acceptance run: SIPp UAC (UDP) -> Kamailio (Debian's tls module) -> TLS ->
sipfleet ``tls:`` -> UDP SIPp UAS, with BYEs from both sides (the callee's
BYE makes sipfleet open a verified TLS connection to Kamailio). The rest use
a Python TLS client against a real ``sipfleet run``. Certificates are made
at test time with ``openssl`` (tlscerts.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import fleet
import pytest
import sipp as harness
import tlscerts
from kamailio_ref import KAMAILIO, _modules_dir, http_post

sipp_env = harness.sipp_env
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(90),
    pytest.mark.skipif(tlscerts.OPENSSL is None, reason="openssl is not installed"),
]
HOST = harness.HOST


def _tls_module() -> bool:
    mpath = _modules_dir()
    return mpath is not None and Path(mpath, "tls.so").exists() and Path(KAMAILIO).exists()


def tls_proxy(
    env: harness.SippEnv,
    destinations: list[str],
    certs: tlscerts.Certs,
    tls: dict[str, object] | None = None,
    http_port: int | None = None,
    **options: object,
) -> tuple[harness.Proxy, int]:
    """``sipfleet run`` on UDP+TCP (one port) and TLS (another), with [tls] from ``certs``
    (and JSON-RPC over HTTP on ``http_port`` when given)."""
    proxy = harness.Proxy(
        env._dir("sipfleet"), destinations, {"first_response_timeout": 2.0, **options}, {}
    )
    if http_port is not None:
        proxy.sections["control"] = {"run_dir": str(proxy.workdir / "run")}
        proxy.sections["control.http"] = {"enabled": True, "host": HOST, "port": http_port}
    tls_port = harness.free_port()
    proxy.sections["proxy"]["listen"] = [
        f"udp:{HOST}:{proxy.port}",
        f"tcp:{HOST}:{proxy.port}",
        f"tls:{HOST}:{tls_port}",
    ]
    proxy.sections["tls"] = {
        "certificate": str(certs.server_cert),
        "private_key": str(certs.server_key),
        "ca_list": str(certs.ca),
        **(tls or {}),
    }
    env.procs.append(proxy)
    proxy.start()
    fleet.wait_for("the tls listener", lambda: harness.listening(tls_port, "tcp"), 15.0)
    return proxy, tls_port


def _stderr(proxy: harness.Proxy) -> str:
    return Path(proxy.stderr_path).read_text("utf-8", "replace")


def _options(call_id: str, port: int, transport: str = "TLS") -> bytes:
    return (
        f"OPTIONS sip:{HOST}:{port};transport={transport.lower()} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {HOST}:5999;branch=z9hG4bK-{call_id};rport\r\n"
        f"From: <sip:probe@{HOST}>;tag=1\r\nTo: <sip:{HOST}>\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _read_message(conn: ssl.SSLSocket, timeout: float = 5.0) -> bytes:
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _client(
    port: int,
    ca: Path,
    cert: tuple[Path, Path] | None = None,
) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    raw = socket.create_connection((HOST, port), timeout=5.0)
    try:
        return ctx.wrap_socket(raw, server_hostname=HOST)
    except BaseException:
        raw.close()
        raise


def _ping(conn: ssl.SSLSocket, port: int, call_id: str) -> bytes:
    conn.sendall(_options(call_id, port))
    return _read_message(conn)


@pytest.fixture
def certs(tmp_path: Path) -> tlscerts.Certs:
    return tlscerts.make_certs(tmp_path / "certs")


# -- TLS in, UDP out -----------------------------------------------------------------------


def test_tls_in_udp_out_has_two_record_routes_and_the_answer_comes_back_on_tls(sipp_env, certs):
    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.bind((HOST, 0))
    backend.settimeout(5.0)
    be_port = backend.getsockname()[1]
    proxy, tls_port = tls_proxy(sipp_env, [f"sip:{HOST}:{be_port}"], certs)
    with _client(tls_port, certs.ca) as conn:
        invite = (
            f"INVITE sip:bob@{HOST}:{tls_port};transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {HOST}:5999;branch=z9hG4bK-tls1;rport\r\n"
            f"From: <sip:alice@{HOST}>;tag=a1\r\nTo: <sip:bob@{HOST}>\r\nCall-ID: tls-rr-1\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:alice@{HOST}:5999;transport=tls>\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        conn.sendall(invite)
        data, _ = backend.recvfrom(65536)
        head = data.decode().split("\r\n")
        rr = [line for line in head if line.lower().startswith("record-route:")]
        assert [v.partition(";sf=")[0] for v in rr] == [
            f"Record-Route: <sip:{HOST}:{proxy.port};lr",
            f"Record-Route: <sip:{HOST}:{tls_port};transport=tls;lr",
        ], head
        assert head[1].startswith(f"Via: SIP/2.0/UDP {HOST}:{proxy.port};branch=")
        # The back end answers; the 200 goes back over the same TLS connection.
        vias = [line for line in head if line.startswith("Via:")]
        answer = "\r\n".join(
            [
                "SIP/2.0 200 OK",
                *vias,
                f"From: <sip:alice@{HOST}>;tag=a1",
                f"To: <sip:bob@{HOST}>;tag=b1",
                "Call-ID: tls-rr-1",
                "CSeq: 1 INVITE",
                *rr,
                f"Contact: <sip:bob@{HOST}:{be_port}>",
                "Content-Length: 0",
                "",
                "",
            ]
        ).encode()
        backend.sendto(answer, (HOST, proxy.port))
        reply = b""
        deadline = time.monotonic() + 15
        while b"200 OK" not in reply and time.monotonic() < deadline:
            reply = _read_message(conn)
        assert reply.startswith(b"SIP/2.0 200 OK"), reply
        assert b"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls1" in reply
    backend.close()


@pytest.mark.parametrize("with_cert", [True, False])
def test_an_alias_lets_in_dialog_requests_reuse_the_callers_connection(sipp_env, certs, with_cert):
    """RFC 5923: the caller's Via says ``alias`` and its certificate names its sent-by:
    the callee's BYE comes back over the caller's own connection. Without a
    certificate the alias is refused and sipfleet dials the sent-by (nobody there)."""
    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.bind((HOST, 0))
    backend.settimeout(5.0)
    be_port = backend.getsockname()[1]
    proxy, tls_port = tls_proxy(sipp_env, [f"sip:{HOST}:{be_port}"], certs)
    nobody = harness.free_port()  # the caller's sent-by: nothing listens there
    cert = (certs.client_cert, certs.client_key) if with_cert else None
    with _client(tls_port, certs.ca, cert) as conn:
        conn.sendall(
            (
                f"INVITE sip:bob@{HOST}:{tls_port};transport=tls SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS {HOST}:{nobody};branch=z9hG4bK-al1;rport;alias\r\n"
                f"From: <sip:alice@{HOST}>;tag=a1\r\nTo: <sip:bob@{HOST}>\r\nCall-ID: alias-1\r\n"
                f"CSeq: 1 INVITE\r\nContact: <sip:alice@{HOST}:{nobody};transport=tls>\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        data, _ = backend.recvfrom(65536)
        rr = [
            v.split(":", 1)[1].strip()
            for v in data.decode().split("\r\n")
            if v.startswith("Record-Route:")
        ]
        bye = "\r\n".join(
            [
                f"BYE sip:alice@{HOST}:{nobody};transport=tls SIP/2.0",
                f"Via: SIP/2.0/UDP {HOST}:{be_port};branch=z9hG4bK-bye1;rport",
                *(f"Route: {r}" for r in rr),
                f"From: <sip:bob@{HOST}>;tag=b1",
                f"To: <sip:alice@{HOST}>;tag=a1",
                "Call-ID: alias-1",
                "CSeq: 1 BYE",
                "Max-Forwards: 70",
                "Content-Length: 0",
                "",
                "",
            ]
        ).encode()
        backend.sendto(bye, (HOST, proxy.port))
        got = b""
        conn.settimeout(0.3)
        # With a cert the BYE comes (a generous deadline); without, none may come in 1.5 s.
        deadline = time.monotonic() + (15.0 if with_cert else 1.5)
        while b"BYE sip:" not in got and time.monotonic() < deadline:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += chunk
        assert (b"BYE sip:alice@" in got) is with_cert, got
    backend.close()


def test_a_sips_request_is_never_forwarded_over_udp(sipp_env, certs):
    """RFC 5630: over TLS with a UDP-only back end -> 480; over plain TCP -> 416."""
    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.bind((HOST, 0))
    backend.settimeout(0.5)
    proxy, tls_port = tls_proxy(sipp_env, [f"sip:{HOST}:{backend.getsockname()[1]}"], certs)

    def sips_invite(transport: str, port: int) -> bytes:
        return (
            f"INVITE sips:bob@{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {HOST}:5999;branch=z9hG4bK-s{transport};rport\r\n"
            f"From: <sips:alice@{HOST}>;tag=a1\r\nTo: <sips:bob@{HOST}>\r\n"
            f"Call-ID: sips-{transport}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sips:alice@{HOST}:5999>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    with _client(tls_port, certs.ca) as conn:
        conn.sendall(sips_invite("TLS", tls_port))
        reply = b""
        while b"SIP/2.0 4" not in reply:
            chunk = _read_message(conn)
            assert chunk, f"closed without a final answer: {reply!r}"
            reply += chunk
        assert b"SIP/2.0 480 Temporarily Unavailable" in reply, reply
    with socket.create_connection((HOST, proxy.port), timeout=5.0) as tcp:
        tcp.sendall(sips_invite("TCP", proxy.port))
        tcp.settimeout(5.0)
        reply = b""
        while b"SIP/2.0 4" not in reply:
            chunk = tcp.recv(65536)
            assert chunk, f"closed without a final answer: {reply!r}"
            reply += chunk
        assert b"SIP/2.0 416 SIPS Requires TLS" in reply, reply
    with pytest.raises(TimeoutError):
        backend.recvfrom(65536)  # nothing reached the UDP back end
    backend.close()


# -- handshakes that fail ---------------------------------------------------------------------


def test_a_client_that_does_not_trust_our_ca_fails_with_a_log_line(sipp_env, certs):
    http_port = harness.free_port()
    proxy, tls_port = tls_proxy(sipp_env, [f"sip:{HOST}:9"], certs, http_port=http_port)
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(tls_port, certs.rogue_ca)
    fleet.wait_for(
        "sipfleet's log line",
        lambda: (
            "tls handshake with 127.0.0.1:" in _stderr(proxy)
            and "failed: tlsv1 alert unknown ca" in _stderr(proxy)
        ),
        15.0,
    )
    with _client(tls_port, certs.ca) as conn:  # a client that trusts it is served
        assert _ping(conn, tls_port, "trusted").startswith(b"SIP/2.0 200 OK")
    # ... and it is counted, under Kamailio's tcp: names and sipfleet's own.
    answer = http_post(
        HOST,
        http_port,
        "/RPC",
        json.dumps(
            {
                "jsonrpc": "2.0",
                "method": "stats.get_statistics",
                "params": ["tcp:", "sipfleet:"],
                "id": 1,
            }
        ).encode(),
    )
    assert answer is not None and answer.status == 200, answer
    stats = dict(line.split(" = ") for line in answer.json["result"])
    assert stats["sipfleet:tls_handshake_failures"] == "1"
    assert int(stats["sipfleet:tls_handshakes"]) == 2
    # Both were accepted; only the trusted one reached the connected state.
    assert int(stats["tcp:passive_open"]) >= 2 and int(stats["tcp:established"]) >= 1
    assert {"tcp:local_reject", "sipfleet:tcp_header_timeouts", "sipfleet:rpc_calls"} <= set(stats)


def test_require_certificate_refuses_clients_without_one_or_from_another_ca(sipp_env, certs):
    proxy, tls_port = tls_proxy(
        sipp_env, [f"sip:{HOST}:9"], certs, tls={"require_certificate": True}
    )
    with _client(tls_port, certs.ca, (certs.client_cert, certs.client_key)) as conn:
        assert _ping(conn, tls_port, "mutual").startswith(b"SIP/2.0 200 OK")
    for cert in (None, (certs.rogue_cert, certs.rogue_key)):
        try:  # TLS 1.3: the client learns of the refusal at its first read
            with _client(tls_port, certs.ca, cert) as conn:
                assert _ping(conn, tls_port, "refused") == b""
        except (ssl.SSLError, ConnectionError):
            pass
    fleet.wait_for(
        "both refusals logged",
        lambda: _stderr(proxy).count("tls handshake with") >= 2,
        15.0,
    )
    log = _stderr(proxy)
    assert "peer did not return a certificate" in log
    assert "certificate verify failed: unable to get local issuer certificate" in log


def test_a_silent_client_is_cut_at_the_handshake_timeout(sipp_env, certs):
    proxy, tls_port = tls_proxy(
        sipp_env, [f"sip:{HOST}:9"], certs, tls={"handshake_timeout": 1.0}, tcp_header_timeout=30.0
    )
    start = time.monotonic()
    with socket.create_connection((HOST, tls_port), timeout=5.0) as s:
        assert s.recv(100) == b""  # closed by sipfleet
    assert time.monotonic() - start < 3.0
    fleet.wait_for("the log line", lambda: "no handshake within 1 s" in _stderr(proxy), 15.0)


# -- SIGHUP ---------------------------------------------------------------------------------


def test_sighup_reloads_certificates_without_dropping_a_connection(sipp_env, certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(certs.server_cert, live / "cert.pem")
    shutil.copy(certs.server_key, live / "key.pem")
    shutil.copy(certs.ca, live / "ca.pem")
    proxy, tls_port = tls_proxy(
        sipp_env,
        [f"sip:{HOST}:9"],
        certs,
        tls={
            "certificate": str(live / "cert.pem"),
            "private_key": str(live / "key.pem"),
            "ca_list": str(live / "ca.pem"),
        },
    )
    old = _client(tls_port, certs.ca)
    assert _ping(old, tls_port, "before").startswith(b"SIP/2.0 200 OK")

    # A new certificate from another CA replaces the files; SIGHUP.
    ca2 = tlscerts._ca(tmp_path, "second-ca")
    cert2 = tlscerts.issue(tmp_path, "server2", ca2)
    shutil.copy(cert2[0], live / "cert.pem")
    shutil.copy(cert2[1], live / "key.pem")
    assert proxy.popen is not None
    proxy.popen.send_signal(signal.SIGHUP)
    fleet.wait_for("the reload", lambda: "TLS certificates reloaded" in _stderr(proxy), 15.0)

    # The established connection still works; new handshakes get the new certificate.
    assert _ping(old, tls_port, "after").startswith(b"SIP/2.0 200 OK")
    with _client(tls_port, ca2[0]) as new:
        assert _ping(new, tls_port, "new").startswith(b"SIP/2.0 200 OK")
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(tls_port, certs.ca)
    old.close()

    # Unusable files: the old certificate stays, with a clear line.
    (live / "key.pem").write_text("not a key\n")
    proxy.popen.send_signal(signal.SIGHUP)
    fleet.wait_for("the refusal", lambda: "TLS not reloaded" in _stderr(proxy), 15.0)
    with _client(tls_port, ca2[0]) as new:
        assert _ping(new, tls_port, "kept").startswith(b"SIP/2.0 200 OK")


# -- Kamailio as the TLS carrier ------------------------------------------------------------

_KAMAILIO_CFG = """\
#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
enable_tls=yes
listen=udp:127.0.0.1:{udp_port}
listen=tls:127.0.0.1:{tls_port}
mpath="{mpath}"
loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
modparam("tls", "config", "{workdir}/tls.cfg")
modparam("rr", "enable_double_rr", 1)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{ t_relay(); }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ t_relay(); }}
        exit;
    }}
    if (is_method("INVITE")) {{ record_route(); }}
    $du = "sip:127.0.0.1:{sipfleet_tls};transport=tls";
    t_relay();
    exit;
}}
"""

_KAMAILIO_TLS_CFG = """\
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {cert}
private_key = {key}
ca_list = {ca}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = {cert}
private_key = {key}
ca_list = {ca}
"""


@pytest.mark.skipif(not _tls_module(), reason="Kamailio's tls module is not installed")
def test_calls_through_kamailio_over_tls(sipp_env, certs, tmp_path):
    uas = sipp_env.uas("uas_rr.xml")
    proxy, tls_port = tls_proxy(sipp_env, [uas.uri], certs)
    kdir = tmp_path / "kamailio"
    kdir.mkdir()
    kcert = tlscerts.issue(kdir, "kamailio", (certs.ca, certs.ca_key))
    (kdir / "tls.cfg").write_text(
        _KAMAILIO_TLS_CFG.format(cert=kcert[0], key=kcert[1], ca=certs.ca)
    )
    k_udp, k_tls = harness.free_port(), harness.free_port()
    (kdir / "kamailio.cfg").write_text(
        _KAMAILIO_CFG.format(
            udp_port=k_udp,
            tls_port=k_tls,
            mpath=_modules_dir(),
            workdir=kdir,
            sipfleet_tls=tls_port,
        )
    )
    klog = (kdir / "kamailio.log").open("wb")
    kam = subprocess.Popen(
        [KAMAILIO, "-DD", "-E", "-m", "64", "-M", "8", "-f", str(kdir / "kamailio.cfg")],
        stdout=klog,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        fleet.wait_for(
            "kamailio's listeners",
            lambda: (
                kam.poll() is None
                and harness.listening(k_udp, "udp")
                and harness.listening(k_tls, "tcp")
            ),
            15.0,
        )
        carrier = f"{HOST}:{k_udp}"
        r = sipp_env.uac("uac_rr.xml", carrier, calls=60, rate=30)
        assert (r.successful, r.failed) == (60, 0), r.summary() + _stderr(proxy)[-3000:]
        # The callee hangs up: sipfleet opens a verified TLS connection to Kamailio.
        callee = sipp_env.uas("uas_callee_bye.xml")
        proxy.list_path.write_text(f"1 {callee.uri} 0 0\n")
        assert proxy.popen is not None
        proxy.popen.send_signal(signal.SIGHUP)
        fleet.wait_for("the reload", lambda: "reloaded by SIGHUP" in _stderr(proxy), 15.0)
        r = sipp_env.uac("uac_callee_bye.xml", carrier, calls=20, rate=20)
        assert (r.successful, r.failed) == (20, 0), r.summary() + _stderr(proxy)[-3000:]
        assert callee.stop().successful == 20
        assert uas.stop().successful == 60
        assert "tls handshake" not in _stderr(proxy)  # no failures on our side
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(kam.pid, sig)
                kam.wait(5)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        klog.close()
        print("[kamailio]", (kdir / "kamailio.log").read_text(errors="replace")[-3000:])
