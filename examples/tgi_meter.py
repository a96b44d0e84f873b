"""A meter for another protocol: Hugging Face Text Generation Inference's ``/generate`` API.

Name it in a route to give that API token budgets and tier caps, as ``inspect: openai`` does
for the OpenAI shapes:

    routes:
      - name: generate
        match: {path: "^/generate(_stream)?$", methods: [POST]}
        inspect: examples.tgi_meter:TGI
        limits:
          - {per: api_key, rate: 200000/day, cost: tokens}

Request: ``{"inputs": "...", "parameters": {"max_new_tokens": 20, "best_of": 2}}``.
Response: ``{"generated_text": "...", "details": {"generated_tokens": 20, ...}}``; a stream
sends ``data: {"token": {"text": " a", ...}, ...}`` events, the last with ``details``.
"""

from __future__ import annotations

from typing import Any

from guardrail.metering import Ask, text_tokens


class TGIMeter:
    def prompt(self, body: dict[str, Any]) -> str:
        inputs = body.get("inputs")
        return inputs if isinstance(inputs, str) else ""

    def ask(self, body: dict[str, Any]) -> Ask:
        parameters = self._parameters(body)
        output = parameters.get("max_new_tokens")
        best_of = parameters.get("best_of")
        return Ask(
            text_tokens(self.prompt(body)),
            output if type(output) is int and output >= 0 else None,
            best_of if type(best_of) is int and best_of > 1 else 1,
        )

    def cap(self, body: dict[str, Any], max_tokens: int) -> bool:
        parameters = body.setdefault("parameters", {})
        if not isinstance(parameters, dict):
            body["parameters"] = parameters = {}
        output = parameters.get("max_new_tokens")
        if type(output) is int and 0 <= output <= max_tokens:
            return False
        parameters["max_new_tokens"] = max_tokens
        return True

    def strip(self, body: dict[str, Any], what: frozenset[str]) -> bool:
        parameters = self._parameters(body)
        removed = False
        for name, key in (("logprobs", "top_n_tokens"), ("logprobs", "decoder_input_details")):
            if name in what and key in parameters:
                del parameters[key]
                removed = True
        if "n" in what and parameters.get("best_of", 1) != 1:
            del parameters["best_of"]
            removed = True
        return removed

    def usage(self, payload: dict[str, Any]) -> int | None:
        details = payload.get("details")
        if not isinstance(details, dict):
            return None
        generated = details.get("generated_tokens")
        prefill = details.get("prefill")  # the prompt's tokens, when the client asked for them
        if type(generated) is not int:
            return None
        return generated + (len(prefill) if isinstance(prefill, list) else 0)

    def streamed(self, payload: dict[str, Any]) -> int:
        token = payload.get("token")
        return 1 if isinstance(token, dict) and not token.get("special", False) else 0

    @staticmethod
    def _parameters(body: dict[str, Any]) -> dict[str, Any]:
        parameters = body.get("parameters")
        return parameters if isinstance(parameters, dict) else {}


TGI = TGIMeter()
