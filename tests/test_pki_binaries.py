"""Simulated-cluster plumbing: certificates and the Kubernetes wrapper module."""

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gpu_conformance.errors import SimError
from gpu_conformance.sim import binaries, pki


def test_certificates_chain_to_the_ca_with_loopback_sans(tmp_path: Path) -> None:
    pki.generate(tmp_path, "10.96.0.1")
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.96.0.1"}
    admin = x509.load_pem_x509_certificate((tmp_path / "admin.crt").read_bytes())
    admin.verify_directly_issued_by(ca)
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    assert oct((tmp_path / "admin.key").stat().st_mode & 0o777) == "0o600"


GO_MOD = """module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

require (
	github.com/x/y v1.2.3
	k8s.io/api v0.0.0
	k8s.io/kube-openapi v0.0.0-20260317180543-43fb72c5454a
	k8s.io/streaming v0.0.0
)
"""


def test_wrapper_module_replaces_only_staging_modules() -> None:
    mod = binaries.wrapper_go_mod(GO_MOD, "1.36.3")
    assert "go 1.26.0" in mod and "godebug default=go1.26" in mod
    assert "require k8s.io/kubernetes v1.36.3" in mod
    assert "\tk8s.io/api => k8s.io/api v0.36.3" in mod and "\tk8s.io/streaming => k8s.io/streaming v0.36.3" in mod
    assert "kube-openapi =>" not in mod  # pinned by pseudo-version upstream, not a staging module


def test_binary_named_by_environment_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(binaries.env_var("kube-apiserver"), str(tmp_path / "nope"))
    with pytest.raises(SimError, match="GPU_CONFORMANCE_KUBE_APISERVER=.* is not an executable file"):
        binaries.ensure(allow_build=False)
