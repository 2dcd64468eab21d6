"""The local CA that tools/tls.py issues: a CA, and a server certificate it signed for the stack's addresses."""

from pathlib import Path

from cryptography import x509

from tools.tls import issue


def test_issue_writes_a_ca_and_a_server_certificate_it_signed(tmp_path: Path) -> None:
    files = issue(tmp_path / "tls")
    assert files.key.stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_issue_keeps_files_already_there(tmp_path: Path) -> None:
    first = issue(tmp_path / "tls")
    before = first.cert.read_bytes()
    assert issue(tmp_path / "tls", hosts=("example.com",)) == first
    assert first.cert.read_bytes() == before, "an operator's own certificate, or the first one issued, is kept"


def test_issue_for_other_hosts(tmp_path: Path) -> None:
    files = issue(tmp_path / "tls", hosts=("llmorch.example.com", "10.0.0.7"))
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["llmorch.example.com"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
