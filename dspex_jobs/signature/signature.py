"""The :class:`Signature` class: a parsed, immutable, cached DSPy signature.

Producers parse and validate signatures on every enqueue, so parsing is cached (bounded LRU,
keyed by text, instructions and per-call types) and the uncached path is a single fast pass
that never touches pydantic or DSPy. Validation (pydantic) and compilation (DSPy) happen on
first use and are cached per signature, also in bounded LRUs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final, Literal, final

from dspex_jobs.signature import types as _types
from dspex_jobs.signature.nodes import Field
from dspex_jobs.signature.parser import parse_fields
from dspex_jobs.signature.quick import clear_type_cache, quick_parse

__all__ = ["PARSE_CACHE_SIZE", "Signature", "clear_caches"]

PARSE_CACHE_SIZE: Final = 4096
"""How many parsed signatures :meth:`Signature.parse` keeps (least recently used go first)."""


@final
class Signature:
    """A DSPy signature: named, typed inputs and outputs, plus optional instructions.

    Build one with :meth:`parse`. Instances are immutable (parsed ones are shared through the
    cache), hashable, and compare by meaning; ``str(sig)`` is the canonical text, and
    ``Signature.parse(str(sig)) == sig`` (instructions aside, which are not part of the text).

    Example::

        sig = Signature.parse("question: str, context: list[str] -> answer: str")
        sig.validate_inputs({"question": "Why?", "context": ["..."]})
        program = dspy.ChainOfThought(sig.to_dspy())  # on the worker
    """

    __slots__ = ("_hash", "_inputs", "_instructions", "_outputs", "_text")

    def __init__(
        self,
        inputs: tuple[Field, ...],
        outputs: tuple[Field, ...],
        instructions: str | None = None,
    ) -> None:
        self._inputs = inputs
        self._outputs = outputs
        self._instructions = instructions

    @property
    def inputs(self) -> tuple[Field, ...]:
        """The input fields, in order."""
        return self._inputs

    @property
    def outputs(self) -> tuple[Field, ...]:
        """The output fields, in order."""
        return self._outputs

    @property
    def instructions(self) -> str | None:
        """The instructions given to :meth:`parse`; ``None`` means DSPy's default ones."""
        return self._instructions

    @staticmethod
    def parse(
        text: str,
        instructions: str | None = None,
        *,
        types: Mapping[str, object] | None = None,
    ) -> Signature:
        """Parse DSPy signature text; the result is cached by ``(text, instructions, types)``.

        Args:
            text: ``"inputs -> outputs"``, each side a comma-separated list of
                ``name[: type] ["description"]``.
            instructions: The signature's instructions; ``None`` gives DSPy's default ones.
            types: Custom types this text may name, in addition to the registered ones.

        Returns:
            The parsed signature.

        Raises:
            SignatureError: If the text is not a valid signature; it shows where and why.
            ValueError: If a name in ``types`` is not a dotted identifier or is a built-in name.
            TypeError: If ``text`` or ``instructions`` is not a string.
        """
        if types is None:
            return _parse_cached(text, instructions)
        return _parse_cached_with_types(text, instructions, tuple(types.items()))

    @property
    def fields(self) -> tuple[Field, ...]:
        """Inputs then outputs."""
        return self.inputs + self.outputs

    def validate_inputs(
        self, inputs: Mapping[str, Any], *, mode: Literal["python", "json"] = "python"
    ) -> dict[str, Any]:
        """Check a job's inputs against this signature, converting values as pydantic does.

        Args:
            inputs: Input values by field name.
            mode: ``"python"`` returns the converted values; ``"json"`` returns their JSON-able
                form (datetimes as strings, and so on).

        Returns:
            The inputs, converted (``"3"`` becomes ``3`` for an ``int`` field).

        Raises:
            SignatureValidationError: Listing every missing, extra or ill-typed input at once.
        """
        from dspex_jobs.signature.validator import validate

        return validate(self, inputs, mode)

    def to_dspy(self) -> type[Any]:
        """This signature as a ``dspy.Signature`` subclass (imports DSPy; cached).

        The class has the fields, order and annotations ``dspy.Signature(text)`` gives, plus the
        descriptions as ``desc`` and the instructions.
        """
        from dspex_jobs.signature.compiler import compile_signature

        return compile_signature(self)

    def __str__(self) -> str:
        try:
            return self._text
        except AttributeError:
            inputs = ", ".join(map(str, self._inputs))
            outputs = ", ".join(map(str, self._outputs))
            self._text: str = f"{inputs} -> {outputs}".strip()
            return self._text

    def __repr__(self) -> str:
        if self._instructions is None:
            return f"Signature({str(self)!r})"
        return f"Signature({str(self)!r}, instructions={self._instructions!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Signature):
            return NotImplemented
        return self is other or (
            self._instructions == other._instructions
            and self._inputs == other._inputs
            and self._outputs == other._outputs
        )

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            self._hash: int = hash((self._inputs, self._outputs, self._instructions))
            return self._hash


def _parse_uncached(
    text: str, instructions: str | None = None, types: Mapping[str, object] | None = None
) -> Signature:
    """Parse without any cache (what the cached paths call, and what benchmarks measure)."""
    if not isinstance(text, str):
        raise TypeError(f"signature text must be a str, not {type(text).__name__}")
    if instructions is not None and not isinstance(instructions, str):
        raise TypeError(f"instructions must be a str or None, not {type(instructions).__name__}")
    if not types:
        found = quick_parse(text)
        if found is not None:
            return Signature(found[0], found[1], instructions)
        return Signature(*parse_fields(text), instructions)
    extra = {name: _types.custom_spec(name, target) for name, target in types.items()}
    return Signature(*parse_fields(text, extra), instructions)


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_cached(text: str, instructions: str | None) -> Signature:
    return _parse_uncached(text, instructions)


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_cached_with_types(
    text: str, instructions: str | None, types: tuple[tuple[str, object], ...]
) -> Signature:
    return _parse_uncached(text, instructions, dict(types))


def clear_caches() -> None:
    """Empty every signature cache: parsed signatures, input validators and DSPy classes.

    Registering or unregistering a type clears the parse caches by itself.
    """
    _clear_parse_caches()
    from dspex_jobs.signature import compiler, validator

    compiler.compile_signature.cache_clear()
    validator.input_adapter.cache_clear()


def _clear_parse_caches() -> None:
    _parse_cached.cache_clear()
    _parse_cached_with_types.cache_clear()
    clear_type_cache()


_types.on_change(_clear_parse_caches)
