"""Real jsonkv-server processes a test starts, stops and restarts on the same port and data
directory, and the certificates (a CA, a server's and a client's) its TLS tests need, made
afresh on every run so that no key is ever committed."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

START_TIMEOUT = 30
STOP_TIMEOUT = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server: `--listen 127.0.0.1:<port> --data-dir <dir>` plus `args`. Durable unless
    `args` say `--in-memory`; a restart keeps the port and the data directory."""

    def __init__(self, binary: str, args: list[str], home: Path):
        self.binary = binary
        self.args = args
        self.home = home
        home.mkdir(parents=True)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        # A port from free_port may be taken again before the server binds it: try another.
        for _ in range(3):
            self.port = free_port()
            if self._spawn():
                return
        raise RuntimeError(f"jsonkv-server did not start; its log:\n{self._log()}")

    def restart(self) -> None:
        """Stops the server and starts it again on the same port and data directory."""
        self.stop()
        if not self._spawn():
            raise RuntimeError(f"jsonkv-server did not start again; its log:\n{self._log()}")

    def _spawn(self) -> bool:
        with open(self.home / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--listen", self.addr, *self._data_dir(), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def _data_dir(self) -> list[str]:
        return [] if "--in-memory" in self.args else ["--data-dir", str(self.home / "data")]

    def stop(self) -> None:
        """SIGTERM; the contract says the server then exits 0."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError("jsonkv-server ignored SIGTERM") from None
        if code != 0:
            raise RuntimeError(f"jsonkv-server exited {code}; its log:\n{self._log()}")

    def _log(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")[-4000:]


class BlackHole:
    """A listener that accepts connections and never answers: a hung server."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.addr = f"127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA, the server's certificate and key, a client's certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    def write_key(name: str) -> tuple[ec.EllipticCurvePrivateKey, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        path = directory / f"{name}.key"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return key, path

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, _ = write_key("ca")

    def issue(subject: str, key, issuer_key, *extensions) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("jsonkv test CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca = issue(
        "jsonkv test CA",
        ca_key,
        ca_key,
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
    )
    server_key, server_key_path = write_key("server")
    server = issue(
        "localhost",
        server_key,
        ca_key,
        (
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        ),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    )
    client_key, client_key_path = write_key("client")
    client = issue(
        "alice",
        client_key,
        ca_key,
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
    )
    paths = {}
    for label, cert in (("ca", ca), ("server", server), ("client", client)):
        paths[label] = directory / f"{label}.pem"
        paths[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(paths["ca"], paths["server"], server_key_path, paths["client"], client_key_path)
