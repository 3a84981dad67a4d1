"""Certificates and keys of the local cluster, made once with the openssl CLI and reused.

A private CA signs the API server's serving certificate, valid for 127.0.0.1 and the
in-cluster names; the CA is also `--root-ca-file`, so the `ca.crt` in every
service-account token secret verifies the API server at 127.0.0.1 and
`load_incluster_config()` works in pods. The service-account signing key pair and the
node agent's self-signed log-endpoint certificate live here too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

API_SANS = [
    "IP:127.0.0.1",
    "IP:10.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def ensure(cert_dir: Path, node_name: str) -> None:
    """Create whatever is missing of: CA, API serving cert, SA key pair, node serving cert."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    d = cert_dir
    if not (d / "ca.crt").exists():
        _openssl("genrsa", "-out", "ca.key", "2048", cwd=d)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=kubetune-local-ca",
            "-days",
            "3650",
            "-out",
            "ca.crt",
            cwd=d,
        )
        (d / "apiserver.crt").unlink(missing_ok=True)
    if not (d / "apiserver.crt").exists():
        _signed(d, "apiserver", "kube-apiserver", API_SANS)
    if not (d / "sa.pub").exists():
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    if not (d / "node.crt").exists():
        _signed(d, "node", node_name, ["IP:127.0.0.1", "DNS:localhost", f"DNS:{node_name}"])


def _signed(d: Path, name: str, cn: str, sans: list[str]) -> None:
    ext = d / f"{name}.ext"
    ext.write_text(
        f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    _openssl(
        "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=d
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        ext.name,
        "-out",
        f"{name}.crt",
        cwd=d,
    )
