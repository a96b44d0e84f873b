"""One exception tree: catch ``GuardrailError`` for anything guardrail raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class GuardrailError(Exception):
    """Root of every error guardrail raises."""


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem found in a policy file, located precisely enough to fix it."""

    file: str
    line: int | None
    path: str
    value: object
    expected: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = self.path or "(document)"
        return f"{where}: {key}: {self.value!r}: {self.expected}"


class PolicyError(GuardrailError):
    """A policy did not validate. ``issues`` holds every problem found, not just the first."""

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        self.issues = tuple(issues)
        noun = "error" if len(self.issues) == 1 else "errors"
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"policy refused, {len(self.issues)} {noun}:\n{lines}")


class SecretError(GuardrailError):
    """A secret reference (``env:NAME`` / ``file:PATH``) could not be resolved."""


class StorageError(GuardrailError):
    """The limit storage failed; the middleware applies ``on_storage_error``."""


class AuditError(GuardrailError):
    """The audit trail could not be written, read or verified."""


class ClearanceError(GuardrailError):
    """A clearance was refused: forged, expired, bound to another client, or used up."""


class DeploymentError(GuardrailError):
    """Guardrail was placed where it cannot guard: e.g. built once per route handler."""


class ProvenanceError(GuardrailError):
    """An output-provenance index or a suspect file could not be read, written or used.

    ``where`` names the file (and line, when there is one) at fault."""

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
