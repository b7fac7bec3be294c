"""Test certificates, made at test time with the ``openssl`` command (EC P-256, 2 days).

    certs = make_certs(tmp_path)
    certs.ca, certs.server_cert, certs.server_key     # trusted CA; 127.0.0.1 + localhost
    certs.client_cert, certs.client_key               # a client of the trusted CA
    certs.rogue_ca, certs.rogue_cert, certs.rogue_key # a CA nobody trusts, and its leaf

Import it by name (pyproject puts tests/e2e on the path).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OPENSSL", "Certs", "issue", "make_certs"]

OPENSSL = shutil.which("openssl")


def _run(*args: str | Path) -> None:
    assert OPENSSL is not None, "openssl is not installed"
    subprocess.run(
        [OPENSSL, *map(str, args)],
        check=True,
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def _ca(dirpath: Path, name: str) -> tuple[Path, Path]:
    key, cert = dirpath / f"{name}.key", dirpath / f"{name}.pem"
    _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    _run(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def issue(
    dirpath: Path, name: str, ca: tuple[Path, Path], sans: str = "IP:127.0.0.1,DNS:localhost"
) -> tuple[Path, Path]:
    """A leaf certificate for ``sans`` signed by ``ca`` (cert, key)."""
    key, csr, cert = dirpath / f"{name}.key", dirpath / f"{name}.csr", dirpath / f"{name}.pem"
    ext = dirpath / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    _run("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}")
    _run(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
    )  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def make_certs(dirpath: Path) -> Certs:
    dirpath.mkdir(parents=True, exist_ok=True)
    ca = _ca(dirpath, "test-ca")
    server = issue(dirpath, "server", ca)
    client = issue(dirpath, "client", ca)
    rogue_ca = _ca(dirpath, "rogue-ca")
    rogue = issue(dirpath, "rogue", rogue_ca)
    return Certs(dirpath, ca[0], ca[1], *server, *client, rogue_ca[0], *rogue)
