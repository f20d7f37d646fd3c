"""Producer-side checks of program jobs, called by ``Client.submit`` before anything is sent.

A ``program`` job's inputs are checked against the registered program's signature (one
``HGET`` for its definition), so a wrong input fails on the producer, as for ``predict``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspex_jobs.errors import ValidationError
from dspex_jobs.jobs import JobKind
from dspex_jobs.programs.spec import ProgramRef, ProgramSpec

if TYPE_CHECKING:
    from dspex_jobs.client import Client

__all__ = ["check_inputs", "check_program_job"]


def check_program_job(
    client: Client,
    kind: JobKind,
    signature: str | None,
    program: str | None,
    values: dict[str, Any],
) -> dict[str, Any]:
    """The job's inputs, checked; raises a typed error naming what is wrong.

    Raises:
        ValidationError: A signature was given, no program was, or an input is wrong.
        ProgramNotFound: The program is not defined.
    """
    if signature:
        raise ValidationError(
            f"a {kind.value} job takes no signature: its program has one", field="signature"
        )
    if kind is JobKind.OPTIMIZE:
        if program is not None or not isinstance(values.get("request"), dict):
            raise ValidationError(
                "an optimize job carries only its request (use client.optimize)", field="inputs"
            )
        return values
    if not program:
        raise ValidationError(
            f"a {kind.value} job needs program= (e.g. 'qa@latest')", field="program"
        )
    ref = ProgramRef.parse(program)
    spec = client.programs.spec(ref.name)
    if kind is JobKind.PROGRAM:
        return check_inputs(spec, values)
    rows = values.get("rows")
    if not isinstance(rows, list) or set(values) - {"rows", "offset"}:
        raise ValidationError(
            "a program_batch job's inputs are {'rows': [...], 'offset': n}", field="inputs"
        )
    return values


def check_inputs(
    spec: ProgramSpec, values: dict[str, Any], *, where: str = "inputs"
) -> dict[str, Any]:
    """One row of inputs for ``spec``: validated against its signature, or checked for its
    declared input fields."""
    parsed = spec.parsed_signature()
    if parsed is not None:
        return parsed.validate_inputs(values)
    missing = [name for name in spec.inputs() if name not in values]
    if missing:
        raise ValidationError(f"{where}: missing {', '.join(missing)}", field=missing[0])
    return values
