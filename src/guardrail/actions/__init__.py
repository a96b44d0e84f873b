"""Responses guardrail sends instead of, or around, the app's."""
