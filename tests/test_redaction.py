"""Secrets never reach a report or log: what redaction masks, and what it leaves alone."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from gpu_conformance import redaction

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBmZ0rN0fakefakefakefake\n-----END EC PRIVATE KEY-----"


@pytest.mark.parametrize(("text", "known", "expected"), [
    ("http://nb:8888/lab?token=abc123def", [], "http://nb:8888/lab?token=<redacted>"),
    ("Token: s3cr3t-value and more", [], "Token: <redacted> and more"),
    ("the value zzz-secret-zzz appears bare", ["zzz-secret-zzz"], "the value <redacted> appears bare"),
    ("nothing to hide", ["x" * 48], "nothing to hide"),
    (f"Authorization: Bearer {JWT}", [], "Authorization: Bearer <redacted>"),
    (f"a bare service-account token {JWT} in a log", [], "a bare service-account token <redacted> in a log"),
    (f"key follows\n{KEY}\nend", [], "key follows\n<redacted>\nend"),
    ('{"client-key-data": "TFMwdExTMUNSVWRKVGlCRlF5QlFVa2xXUVZSRklFdEZXUzB0TFMwdENn"}', [],
     '{"client-key-data": "<redacted>"}'),
    ("tokens_per_second=1234567 and token_count: 12", [], "tokens_per_second=1234567 and token_count: 12"),
    ("the basic vector-add and a bearer of news", [], "the basic vector-add and a bearer of news"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", [], "Authorization: Basic <redacted>"),
])
def test_redaction(text: str, known: list[str], expected: str) -> None:
    assert redaction.redact(text, known) == expected


def test_a_kubeconfigs_credentials_are_masked_wherever_they_appear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_known", set())
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 64 + "\n" + "B" * 64 + "\n-----END RSA PRIVATE KEY-----\n"
    key_data = base64.b64encode(pem.encode()).decode()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"client-key-data": key_data, "token": "opaque-static-token-1234"}}],
    }))
    redaction.register_kubeconfig(kubeconfig)
    leaked = f"dump: {key_data} / {'A' * 64} / the token opaque-static-token-1234 / server https://127.0.0.1:6443"
    clean = redaction.redact(leaked)
    assert key_data not in clean and "A" * 64 not in clean and "opaque-static-token-1234" not in clean
    assert "server https://127.0.0.1:6443" in clean


def test_nested_report_data_is_redacted_leaving_other_values() -> None:
    doc = {"results": [{"message": f"Bearer {JWT}", "duration_s": 1.5, "node": None}]}
    assert redaction.redact_any(doc) == {"results": [{"message": "Bearer <redacted>", "duration_s": 1.5, "node": None}]}


def test_a_client_key_kept_in_a_file_is_masked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_known", set())
    line = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" + "x" * 12
    (tmp_path / "admin.key").write_text(f"-----BEGIN PRIVATE KEY-----\n{line}\n-----END PRIVATE KEY-----\n")
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump({"users": [{"name": "u", "user": {"client-key": "admin.key"}}]}))
    redaction.register_kubeconfig(tmp_path / "kubeconfig")
    assert redaction.redact(f"dumped: {line}") == "dumped: <redacted>"


def test_a_report_dir_is_scrubbed_in_place(tmp_path: Path) -> None:
    (tmp_path / "allure-results").mkdir()
    leaky = tmp_path / "allure-results" / "x-result.json"
    leaky.write_text(json.dumps({"statusDetails": {"message": f"ServerError: Bearer {JWT}"}}))
    clean = tmp_path / "junit.xml"
    clean.write_text("<testsuite/>")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    assert redaction.scrub_dir(tmp_path) == [leaky]
    assert JWT not in leaky.read_text() and json.loads(leaky.read_text())["statusDetails"]["message"].endswith("<redacted>")


def test_a_scrub_reaches_known_values_and_text_beyond_ascii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are decoded only where redaction could change them: no trigger word and no known value."""
    monkeypatch.setattr(redaction, "_known", set())
    redaction.register("s3cr3t-value-without-a-keyword")
    known = tmp_path / "stdout.txt"
    known.write_text("printed s3cr3t-value-without-a-keyword here\r\n")
    accented = tmp_path / "nested" / "log.txt"
    accented.parent.mkdir()
    accented.write_text(f"Jupyter café Bearer {JWT}")
    untouched = tmp_path / "nested" / "plain.txt"
    untouched.write_bytes(b"nothing secret\r\n")
    assert redaction.scrub_dir(tmp_path) == sorted([known, accented])
    assert known.read_bytes() == b"printed <redacted> here\r\n"  # line ends kept as written
    assert accented.read_text() == "Jupyter café Bearer <redacted>"
    assert untouched.read_bytes() == b"nothing secret\r\n"
