"""Native implementations of the built-in operations: plain Python, no DSPy, run anywhere.

* ``signature.validate``: :func:`validate_signature`, the native signature engine;
* ``template.render``: :func:`render_template`, the sandboxed template engine;
* ``metric.exact_match`` and ``metric.token_f1``: :func:`exact_match` and :func:`token_f1`,
  the SQuAD-style metrics DSPy ships (``dspy.evaluate.metrics.EM`` and ``F1``), with the same
  normalization and the same scores, for optimizer jobs that score thousands of predictions
  without paying for a DSPy import per process or an LM call per score.

Arguments are JSON-able (signature *text*, not a :class:`Signature`) so a pipeline step can
carry them in a job envelope.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from dspex_jobs.errors import ValidationError
from dspex_jobs.signature import Signature

__all__ = ["exact_match", "normalize_text", "render_template", "token_f1", "validate_signature"]

_PUNCTUATION: Final = str.maketrans("", "", string.punctuation)
_ARTICLES: Final = re.compile(r"\b(a|an|the)\b")


def validate_signature(
    signature: str, inputs: Mapping[str, Any], *, instructions: str | None = None
) -> dict[str, Any]:
    """Parse ``signature`` and check ``inputs`` against it.

    Returns:
        The inputs, converted and in their JSON-able form.

    Raises:
        SignatureError: The signature does not parse.
        SignatureValidationError: Inputs are missing, extra or of the wrong type.
    """
    parsed = Signature.parse(signature, instructions=instructions)
    return parsed.validate_inputs(inputs, mode="json")


def render_template(
    template: str,
    values: Mapping[str, Any],
    *,
    signature: str | None = None,
    extras: Iterable[str] = (),
    max_chars: int | None = None,
) -> str:
    """Render a prompt template, checked against ``signature`` when one is given.

    Raises:
        TemplateError: The template does not compile or names a variable the signature lacks.
        TemplateRenderError: Rendering failed or went over a limit.
    """
    from dspex_jobs.templates import DEFAULT_MAX_CHARS, Template

    compiled = Template.compile(template, extras=extras)
    if signature is not None:
        compiled.validate_against(Signature.parse(signature))
    return compiled.render(values, max_chars=max_chars or DEFAULT_MAX_CHARS)


def normalize_text(text: str) -> str:
    """DSPy's answer normalization: NFD, lowercase, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFD", text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized answer, else 0.0.

    Raises:
        ValidationError: The prediction is not a string, or there are no answers.
    """
    normalized = normalize_text(_text(prediction, "prediction"))
    return float(any(normalized == normalize_text(answer) for answer in _answers(answers)))


def token_f1(prediction: str, answers: str | Sequence[str]) -> float:
    """The best token-level F1 between the prediction and any answer (after normalization).

    Raises:
        ValidationError: The prediction is not a string, or there are no answers.
    """
    predicted = normalize_text(_text(prediction, "prediction")).split()
    return max(_f1(predicted, normalize_text(answer).split()) for answer in _answers(answers))


def _f1(predicted: list[str], expected: list[str]) -> float:
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}", field=what)
    return value


def _answers(answers: str | Sequence[str]) -> list[str]:
    listed = [answers] if isinstance(answers, str) else list(answers)
    if not listed:
        raise ValidationError("a metric needs at least one reference answer", field="answers")
    return [_text(answer, "answers") for answer in listed]
