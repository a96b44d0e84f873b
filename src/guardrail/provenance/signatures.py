"""Signed responses (``provenance.signatures``): RFC 9421 HTTP Message Signatures over an
RFC 9530 ``Content-Digest``, Ed25519, with the maintained ``http-message-signatures``
(``pip install guardrail[signatures]``).

The one deliberate exception to "never buffer": a digest goes in the headers, which leave
before the body, so a signed response is held until its last byte. Only what is cheap and
bounded to hold is signed: a response with a JSON content type and a ``Content-Length`` of at
most ``max_bytes``. Every other response (a stream, no length, too large, not JSON) passes
through untouched, unsigned, and counted (:attr:`ResponseSigner.unsigned`).

The signature (label and tag ``guardrail``) covers the status, the content type, the digest and the
``guardrail-request-id`` header, so a signed answer names the audit record of its request;
``keyid`` names the public key (``guardrail trace public-key`` prints it to publish).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from starlette.types import Message, Send

from guardrail.errors import GuardrailError

LABEL = "guardrail"
COVERED = ("@status", "content-type", "guardrail-request-id")
"""What each signature covers besides ``content-digest`` (added with the body)."""


class Headers:
    """The response's header list seen as the signer wants it (str names, Latin-1 values)."""

    __slots__ = ("fields",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]

    def items(self) -> list[tuple[str, str]]:
        return list(self.fields)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.fields))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.fields)

    def __getitem__(self, name: str) -> str:
        values = [v for n, v in self.fields if n.lower() == name.lower()]
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self.fields.append((name.lower(), value))

    def __delitem__(self, name: str) -> None:
        self.fields = [(n, v) for n, v in self.fields if n.lower() != name.lower()]

    def raw(self) -> list[tuple[bytes, bytes]]:
        return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in self.fields]


class Response:
    """What the signer and verifier read of a response: its status and headers."""

    __slots__ = ("headers", "request", "status_code")

    def __init__(self, status_code: int, headers: Headers) -> None:
        self.status_code = status_code
        self.headers = headers
        self.request = None


def _declared(headers: Iterable[tuple[bytes, bytes]], limit: int) -> int | None:
    """The Content-Length of a response that is signed (JSON, at most ``limit`` bytes), or None
    when it is not signed."""
    size = kind = None
    for name, value in headers:
        if name == b"content-length":
            size = value
        elif name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
    if size is None or kind is None or not (kind == b"application/json" or kind.endswith(b"+json")):
        return None
    try:
        length = int(size)
    except ValueError:
        return None
    return length if 0 <= length <= limit else None


class ResponseSigner:
    """Signs what :func:`_declared` admits; counts what it lets through unsigned."""

    def __init__(
        self, private_pem: bytes, max_bytes: int, clock: Callable[[], float], key_id: str | None
    ) -> None:
        try:
            from cryptography.hazmat.primitives.asymmetric import ed25519
            from cryptography.hazmat.primitives.serialization import load_pem_private_key
            from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
        except ImportError as exc:  # the extra is not installed
            raise GuardrailError(
                f"provenance.signatures needs pip install 'guardrail[signatures]' ({exc})"
            ) from None
        try:
            key = load_pem_private_key(private_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise GuardrailError(
                f"provenance.signatures.key: not a PEM private key ({exc})"
            ) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise GuardrailError("provenance.signatures.key: an Ed25519 private key (PEM)")
        self.public_key = key.public_key()
        self.key_id = key_id or key_id_of(self.public_key)
        self._signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={self.key_id: key}),
        )
        self.max_bytes = max_bytes
        self.clock = clock
        self.signed = 0
        self.unsigned = 0
        """Responses let through unsigned: streamed, no length, too large, or not JSON."""

    def sign(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
        """``headers`` with Content-Digest, Signature-Input and Signature added."""
        response = Response(status, Headers(headers))
        created = datetime.datetime.fromtimestamp(self.clock(), tz=datetime.UTC)
        covered = [c for c in COVERED if c.startswith("@") or c in response.headers]
        self._signer.sign(
            response,
            key_id=self.key_id,
            created=created,
            label=LABEL,
            tag=LABEL,  # signed, unlike the label: what a verifier selects this signature by
            covered_component_ids=covered,
            body=body,
        )
        return response.headers.raw()

    def wrap(self, send: Send) -> Send:
        """A send that holds a signable response until its end, then sends it signed."""
        held: list[Message] = []
        size = 0
        declared: int | None = None
        state = "start"  # then "holding", or "passing" once nothing more is held

        async def wrapped(message: Message) -> None:
            nonlocal state, size, declared
            kind = message["type"]
            if state == "passing":
                await send(message)
            elif kind == "http.response.start":
                declared = _declared(message.get("headers", ()), self.max_bytes)
                if declared is not None:
                    held.append(message)
                    state = "holding"
                else:
                    self.unsigned += 1
                    state = "passing"
                    await send(message)
            elif kind == "http.response.body" and state == "holding":
                held.append(message)
                size += len(message.get("body", b""))
                if size > (declared or 0):  # more than it declared: sent as it is
                    await self._release(send, held, signed=False)
                    state = "passing"
                elif not message.get("more_body", False):
                    # less than declared (a HEAD answer): the digest would not be the content's
                    await self._release(send, held, signed=size == declared)
                    state = "passing"
            elif held:  # a message of an extension while holding: no longer a plain JSON body
                await self._release(send, [*held, message], signed=False)
                state = "passing"
            else:
                await send(message)

        return wrapped

    async def _release(self, send: Send, held: list[Message], *, signed: bool) -> None:
        start, rest = held[0], held[1:]
        if signed:
            body = b"".join(m.get("body", b"") for m in rest if m["type"] == "http.response.body")
            headers = self.sign(start["status"], list(start.get("headers", ())), body)
            start = {**start, "headers": headers}
            self.signed += 1
        else:
            self.unsigned += 1
        held.clear()
        await send(start)
        for message in rest:
            await send(message)


def key_id_of(public_key: Any) -> str:
    """``guardrail-ed25519-`` and 16 hex digits of SHA-256 of the raw public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "guardrail-ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def public_jwk(public_key: Any, key_id: str) -> dict[str, str]:
    """The public key as an RFC 8037 JWK (OKP, Ed25519), with its ``kid``."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": key_id, "alg": "EdDSA"}


def public_key_text(private_pem: bytes, key_id: str | None, *, pem: bool) -> str:
    """What ``guardrail trace public-key`` prints: the JWK (or the PEM) of the signing key."""
    import json

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    signer = ResponseSigner(private_pem, 0, lambda: 0.0, key_id)
    if pem:
        data = signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        return data.decode().rstrip("\n")
    return json.dumps(public_jwk(signer.public_key, signer.key_id), indent=2)
