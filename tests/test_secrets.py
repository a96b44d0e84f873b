"""Secret references resolve to bytes; errors name the reference and never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrail.errors import GuardrailError, SecretError
from guardrail.secrets import reference_kind, resolve_secret


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_TEST_SECRET", "s3cr3t-é")
    assert resolve_secret("env:GUARDRAIL_TEST_SECRET") == "s3cr3t-é".encode()


def test_unset_env_names_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUARDRAIL_TEST_SECRET", raising=False)
    with pytest.raises(SecretError, match=r"'env:GUARDRAIL_TEST_SECRET'.*is not set"):
        resolve_secret("env:GUARDRAIL_TEST_SECRET")


def test_empty_env_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_TEST_SECRET", "")
    with pytest.raises(SecretError, match="is empty"):
        resolve_secret("env:GUARDRAIL_TEST_SECRET")


def test_env_without_a_name_is_an_error() -> None:
    with pytest.raises(SecretError, match="'env:'"):
        resolve_secret("env:")


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_file_reference_strips_the_trailing_newline(tmp_path: Path, ending: bytes) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"  file secret  " + ending)
    assert resolve_secret(f"file:{path}") == b"  file secret  "


def test_unreadable_file_names_the_reference(tmp_path: Path) -> None:
    ref = f"file:{tmp_path / 'absent'}"
    with pytest.raises(SecretError) as caught:
        resolve_secret(ref)
    assert repr(ref) in str(caught.value) and "No such file" in str(caught.value)
    assert isinstance(caught.value, GuardrailError)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\n")
    with pytest.raises(SecretError, match="the file is empty"):
        resolve_secret(f"file:{path}")


def test_literal_is_its_own_utf8_bytes() -> None:
    assert resolve_secret("not-a-reference:é") == "not-a-reference:é".encode()


def test_empty_literal_is_refused_without_echo() -> None:
    with pytest.raises(SecretError, match="the literal secret is empty"):
        resolve_secret("")


@pytest.mark.parametrize(
    ("ref", "kind"),
    [("env:X", "env"), ("file:/x", "file"), ("literal", "literal"), ("ENV:X", "literal")],
)
def test_reference_kind(ref: str, kind: str) -> None:
    assert reference_kind(ref) == kind
