"""The one reading of a marshmallow ValidationError: the first offending field and its rule, as
every message Lumen shows (a 400 body, a start-up line, a CLI error) names them."""

from __future__ import annotations

from marshmallow import ValidationError


def first_problem(err: ValidationError) -> tuple[str, str]:
    """(field, rule) of the first error; nested errors name the innermost field. A field of
    ``_schema`` (a whole-object rule) is returned as it is, for the caller to name."""
    field, messages = next(iter(err.normalized_messages().items()))
    while isinstance(messages, dict):
        field, messages = next(iter(messages.items()))
    message = messages[0] if isinstance(messages, list) else str(messages)
    rule = message.rstrip(".")
    return str(field), rule[:1].lower() + rule[1:]
