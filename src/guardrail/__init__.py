"""guardrail: protect model-serving APIs from abuse, as one pure-ASGI middleware.

from guardrail import Guardrail
app = Guardrail(app, policy="guardrail.yaml")
"""

from guardrail.decision import Decision
from guardrail.errors import (
    AuditError,
    DeploymentError,
    GuardrailError,
    PolicyError,
    PolicyIssue,
    SecretError,
    StorageError,
)
from guardrail.middleware import Guardrail
from guardrail.policy import Policy

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "Decision",
    "DeploymentError",
    "Guardrail",
    "GuardrailError",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "SecretError",
    "StorageError",
    "__version__",
]
