"""What a program is (:class:`ProgramSpec`), how one is named (:class:`ProgramRef`), and one
stored version of it (:class:`ProgramVersion`). Producer-side: no DSPy here.

A program is either a plain DSPy module over a signature (``predict``, ``chain_of_thought``)
or a DSPy module class registered by name (:func:`dspex_jobs.programs.program_class`). A
reference names a program and which version: ``qa@3`` (that version), ``qa@latest`` or just
``qa`` (the newest), ``qa@production`` (whatever was promoted under that alias).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dspex_jobs.errors import ValidationError
from dspex_jobs.signature import Signature

__all__ = ["BUILTIN_MODULES", "EXPORT_FORMAT", "ProgramRef", "ProgramSpec", "ProgramVersion"]

BUILTIN_MODULES = ("predict", "chain_of_thought")
"""Modules built from a signature alone; any other ``module`` names a registered class."""

EXPORT_FORMAT = "dspex-program/1"
"""The ``format`` field of an exported version; a newer format is refused on import."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class ProgramRef:
    """A parsed ``name[@version|@alias]``. ``version`` is set for ``@N``, ``alias`` otherwise
    (``latest`` when no ``@`` was given)."""

    name: str
    version: int | None = None
    alias: str | None = "latest"

    @classmethod
    def parse(cls, ref: str, *, field: str = "program") -> ProgramRef:
        """Parse a reference.

        Raises:
            ValidationError: The name or the part after ``@`` is malformed.
        """
        if not isinstance(ref, str):
            raise ValidationError(
                f"{field} must be a string like 'qa@latest', not {type(ref).__name__}", field=field
            )
        name, sep, tail = ref.partition("@")
        check_name(name, field=field)
        if not sep or tail == "latest":
            return cls(name, None, "latest")
        if tail.isdigit() and int(tail) > 0:
            return cls(name, int(tail), None)
        if not _ALIAS.match(tail):
            raise ValidationError(
                f"{field} {ref!r}: after '@' expected a version number (1, 2, ...), 'latest' "
                "or an alias such as 'production'",
                field=field,
            )
        return cls(name, None, tail)

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.alias}"


def check_name(name: str, *, field: str = "program") -> str:
    """A program name: a letter, then letters, digits, ``_ . -`` (at most 64)."""
    if not _NAME.match(name or ""):
        raise ValidationError(
            f"{field}: program name {name!r} must start with a letter and use only letters, "
            "digits, '_', '.' and '-' (at most 64)",
            field=field,
        )
    return name


def check_alias(alias: str) -> str:
    """An alias name (``production``, ``staging``); ``latest`` is reserved."""
    if alias == "latest" or alias.isdigit() or not _ALIAS.match(alias):
        raise ValidationError(
            f"alias {alias!r} must start with a letter and use letters, "
            "digits, '_' and '-'; 'latest' is reserved",
            field="alias",
        )
    return alias


class ProgramSpec(BaseModel):
    """How to build a program's module (before any compiled state is loaded into it).

    Attributes:
        module: ``predict``, ``chain_of_thought`` or the name of a registered class.
        signature: DSPy signature text; required for the built-in modules.
        instructions: The signature's instructions.
        input_fields: The inputs a row must give; the signature's inputs by default, and
            required for a registered class without a signature.
        options: JSON keyword arguments for a registered class's constructor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str = "predict"
    signature: str | None = None
    instructions: str | None = None
    input_fields: tuple[str, ...] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("module")
    @classmethod
    def _known_shape(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"module {value!r} is not a valid module or class name")
        return value

    @model_validator(mode="after")
    def _check(self) -> ProgramSpec:
        if self.module in BUILTIN_MODULES and not self.signature:
            raise ValueError(f"a {self.module} program needs a signature")
        if self.signature:
            Signature.parse(self.signature, instructions=self.instructions)
        elif not self.input_fields:
            raise ValueError("a program without a signature must list its input_fields")
        return self

    def parsed_signature(self) -> Signature | None:
        """The native signature (cached by the engine), if the program has one."""
        if not self.signature:
            return None
        return Signature.parse(self.signature, instructions=self.instructions)

    def inputs(self) -> tuple[str, ...]:
        """The input field names rows must give."""
        if self.input_fields:
            return self.input_fields
        parsed = self.parsed_signature()
        assert parsed is not None  # _check guarantees one or the other
        return tuple(field.name for field in parsed.inputs)

    def outputs(self) -> tuple[str, ...]:
        """The output field names, when the signature says (empty for bare classes)."""
        parsed = self.parsed_signature()
        return () if parsed is None else tuple(field.name for field in parsed.outputs)


class ProgramVersion(BaseModel):
    """One stored, immutable version: the spec, the module's JSON state and its metadata.

    ``state`` is ``module.dump_state()`` (the ``module.save("x.json")`` form, DSPy's own JSON),
    never a pickle. ``metadata`` records how it was made: optimizer, its arguments, metric,
    score on the valset, dataset hashes, DSPy and code versions, the job id.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = Field(ge=1)
    spec: ProgramSpec
    state: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def export(self) -> dict[str, Any]:
        """The portable form (``dspex-jobs programs export``)."""
        return {"format": EXPORT_FORMAT, **self.model_dump(mode="json")}
