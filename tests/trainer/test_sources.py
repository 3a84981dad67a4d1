"""The volume path guard and the https SSRF guard, against a real TLS server on 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.sources import (
    IPAddress,
    fetch_dataset,
    fetch_https,
    is_public_address,
    resolve_volume_path,
)

# ---------------------------------------------------------------- volume paths


def test_relative_path_resolves_under_root(data_root: Path) -> None:
    path = resolve_volume_path("data/frigo_training.csv", data_root)
    assert path == (data_root / "data" / "frigo_training.csv").resolve()
    absolute = resolve_volume_path(str(data_root / "data" / "frigo_text.csv"), data_root)
    assert absolute.name == "frigo_text.csv"


@pytest.mark.parametrize(
    "url",
    ["../secret.csv", "data/../../secret.csv", "data/../data/frigo_training.csv"],
)
def test_dotdot_is_refused(data_root: Path, url: str) -> None:
    with pytest.raises(BadInputError, match=r"may not contain '\.\.'"):
        resolve_volume_path(url, data_root)


def test_absolute_path_outside_root_is_refused(data_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("text\nx\n")
    with pytest.raises(BadInputError, match="outside the data volume"):
        resolve_volume_path(str(outside), data_root)
    with pytest.raises(BadInputError, match="outside the data volume"):
        resolve_volume_path("/etc/passwd", data_root)


def test_symlink_escape_is_refused(data_root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("text\nsecret\n")
    (data_root / "data" / "link.csv").symlink_to(secret)
    (data_root / "escape").symlink_to(tmp_path)
    with pytest.raises(BadInputError, match="symlink"):
        resolve_volume_path("data/link.csv", data_root)
    with pytest.raises(BadInputError, match="symlink"):
        resolve_volume_path("escape/secret.csv", data_root)
    # A symlink that stays inside the root is fine.
    (data_root / "data" / "alias.csv").symlink_to(data_root / "data" / "frigo_training.csv")
    assert resolve_volume_path("data/alias.csv", data_root).name == "frigo_training.csv"


def test_missing_and_directory(data_root: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        resolve_volume_path("data/nope.csv", data_root)
    with pytest.raises(BadInputError, match="not a file"):
        resolve_volume_path("data", data_root)


def test_other_schemes_are_refused(data_root: Path, tmp_path: Path) -> None:
    for url in ["http://example.com/x.csv", "ftp://example.com/x.csv", "file:///etc/passwd"]:
        with pytest.raises(BadInputError, match="refused"):
            fetch_dataset(url, data_root, tmp_path)


# ---------------------------------------------------------------- address policy


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata (link-local)
        "100.100.100.200",  # Alibaba metadata (CGNAT)
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",  # AWS metadata over IPv6 (unique local)
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x.csv",
        "https://[::1]/x.csv",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/x.csv",
        "https://localhost/x.csv",
    ],
)
def test_https_to_internal_hosts_is_refused_before_connecting(url: str, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="non-public address"):
        fetch_https(url, tmp_path / "x.csv")


def test_credentials_in_url_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="credentials"):
        fetch_https("https://user:pw@example.com/x.csv", tmp_path / "x.csv")


# ---------------------------------------------------------------- a real TLS server

CSV = ("prompt,completion\n" + "".join(f"q{i},a{i}\n" for i in range(20))).encode()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dataset.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dataset.test")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ssl.SSLContext]]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(tmp)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    Handler.routes = {
        "/data.csv": (200, {}, CSV),
        "/moved": (302, {"Location": "/data.csv"}, b""),
        "/to-metadata": (302, {"Location": "https://169.254.169.254/latest/meta-data/"}, b""),
        "/to-internal": (302, {"Location": f"https://internal.test:{port}/data.csv"}, b""),
        "/to-http": (302, {"Location": f"http://dataset.test:{port}/data.csv"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/big": (200, {}, b"x" * 200_000),
        "/forbidden": (403, {}, b"no"),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        yield port, client_ctx
    finally:
        server.shutdown()
        server.server_close()


def fake_resolver(host: str, port: int) -> list[IPAddress]:
    table = {"dataset.test": "127.0.0.1", "internal.test": "10.0.0.5"}
    return [ipaddress.ip_address(table[host])]


def loopback_for_tests(ip: IPAddress) -> bool:
    """The production policy, plus exactly 127.0.0.1 (where the test server listens)."""
    return ip == ipaddress.ip_address("127.0.0.1") or is_public_address(ip)


def fetch(url: str, dest: Path, ctx: ssl.SSLContext, **kw: int) -> object:
    return fetch_https(
        url, dest, resolver=fake_resolver, policy=loopback_for_tests, ssl_context=ctx, **kw
    )


def test_https_download_with_redirect(
    tls_server: tuple[int, ssl.SSLContext], tmp_path: Path
) -> None:
    port, ctx = tls_server
    got = fetch(f"https://dataset.test:{port}/moved", tmp_path / "d.csv", ctx)
    assert (tmp_path / "d.csv").read_bytes() == CSV
    import hashlib

    assert got.sha256 == hashlib.sha256(CSV).hexdigest()  # type: ignore[attr-defined]


def test_every_redirect_is_rechecked(
    tls_server: tuple[int, ssl.SSLContext], tmp_path: Path
) -> None:
    port, ctx = tls_server
    Handler.hits.clear()
    with pytest.raises(BadInputError, match=r"169\.254\.169\.254"):
        fetch(f"https://dataset.test:{port}/to-metadata", tmp_path / "d.csv", ctx)
    with pytest.raises(BadInputError, match=r"internal\.test.*10\.0\.0\.5"):
        fetch(f"https://dataset.test:{port}/to-internal", tmp_path / "d.csv", ctx)
    with pytest.raises(BadInputError, match="scheme 'http' refused"):
        fetch(f"https://dataset.test:{port}/to-http", tmp_path / "d.csv", ctx)
    with pytest.raises(BadInputError, match="redirected more than"):
        fetch(f"https://dataset.test:{port}/loop", tmp_path / "d.csv", ctx)
    assert Handler.hits[:3] == ["/to-metadata", "/to-internal", "/to-http"]


def test_size_cap_and_http_errors(tls_server: tuple[int, ssl.SSLContext], tmp_path: Path) -> None:
    port, ctx = tls_server
    with pytest.raises(BadInputError, match="limit"):
        fetch(f"https://dataset.test:{port}/big", tmp_path / "d.csv", ctx, max_bytes=100_000)
    with pytest.raises(BadInputError, match="HTTP 403"):
        fetch(f"https://dataset.test:{port}/forbidden", tmp_path / "d.csv", ctx)
    with pytest.raises(BadInputError, match="HTTP 404"):
        fetch(f"https://dataset.test:{port}/nothing", tmp_path / "d.csv", ctx)


def test_tls_is_verified_against_the_host_name(
    tls_server: tuple[int, ssl.SSLContext], tmp_path: Path
) -> None:
    from kubetune_trainer.errors import RetryableError

    port, ctx = tls_server
    # The connection goes to the checked IP; the certificate must still match the URL's host.
    with pytest.raises(RetryableError, match=r"CERTIFICATE_VERIFY_FAILED|hostname"):
        fetch(f"https://127.0.0.1:{port}/data.csv", tmp_path / "d.csv", ctx)
