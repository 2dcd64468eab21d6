"""A local certificate authority and a server certificate it signs, for Envoy's TLS in the tests, `make up` and Compose.

Clients trust the CA (`grpcurl -cacert`, the Python client's `root_certificates`, a browser's NSS database), never a
flag that skips verification. Production brings its own certificate (ADR 0015); this is for machines without one.
"""

import argparse
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
# Under the 398 days that browsers accept for a server certificate.
VALID_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key (Envoy's), and the CA that clients trust."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_directory(cls, directory: Path) -> "TlsFiles":
        return cls(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")

    def exist(self) -> bool:
        return self.cert.exists() and self.key.exists() and self.ca.exists()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "llmorch"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> TlsFiles:
    """Write ca.pem, cert.pem (for `hosts`, DNS names or IPs) and key.pem (mode 0600) into `directory`; files that
    are already there are kept, so an operator's own certificate placed there wins and a restart changes nothing."""
    files = TlsFiles.in_directory(directory)
    if files.exist():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("llmorch local CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign and crl_sign only
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_alt_name(host) for host in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files.key.touch(mode=0o600)
    files.key.write_bytes(_pem_key(key))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("directory", type=Path, help="where ca.pem, cert.pem and key.pem go")
    parser.add_argument("--host", action="append", help="a DNS name or IP the certificate is for (repeatable)")
    args = parser.parse_args()
    files = issue(args.directory, args.host or DEFAULT_HOSTS)
    print(f"certificate {files.cert}, key {files.key}; clients trust {files.ca}")


if __name__ == "__main__":
    main()
