"""What a native pipeline step reads and writes, per router operation.

The router (:mod:`dspex_jobs.router`) knows how to *run* an operation; a pipeline also needs
to know, before anything runs, which context fields an operation reads, which it writes, which
parameters it takes and on which queue it belongs. An :class:`OperationSpec` says so, and
adapts the router's call to the pipeline's context:

================== ============================ ================== ========= ==================
operation          reads (argument <- field)    writes             queue     parameters
================== ============================ ================== ========= ==================
signature.validate the signature's inputs       the same, coerced  general   signature
search             query <- question            passages, hits     neural    index, k
metric.exact_match prediction <- answer,        score              general   -
                   answers <- answers
metric.token_f1    (as exact_match)             score              general   -
================== ============================ ================== ========= ==================

A step overrides where an argument comes from with ``inputs={"query": "rewritten"}``. An
operation without a spec still runs, given explicit ``inputs`` (argument -> field) and
``outputs`` (the field names it writes: one takes the value, several take the keys of the
mapping it returns). Register a spec with :func:`register_spec`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex_jobs.errors import PipelineValidationError, SignatureError
from dspex_jobs.settings import Settings

__all__ = ["NativeCall", "OperationSpec", "operation_spec", "register_spec"]


@dataclass(frozen=True)
class NativeCall:
    """Where a native step runs, for an :class:`OperationSpec`'s ``call``.

    Attributes:
        router: The worker's router (``router.call(operation, ...)``).
        operation: The step's operation.
        settings: The worker's settings (``None`` outside a worker).
        queue: The queue the step's task was taken from: an operation can then run in
            process where that queue's resources live (``search`` on ``neural``).
    """

    router: Any
    operation: str
    settings: Settings | None = None
    queue: str | None = None


Caller = Callable[[NativeCall, Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
"""``call(where, params, values) -> outputs``: runs the operation in a worker."""


@dataclass(frozen=True)
class OperationSpec:
    """How a native operation fits in a pipeline.

    Attributes:
        operation: The router operation.
        reads: Argument name -> the context field it is read from by default.
        writes: The fields it writes.
        queue: Where its steps run (``neural`` for anything that needs a local model).
        required: Parameters a step must give.
        optional: Parameters a step may give.
        call: Runs it (see :data:`Caller`); default: ``router.call(op, **params, **values)``
            with the value written to the single field in ``writes``.
        dynamic: For operations whose fields depend on a parameter (``signature.validate``):
            ``dynamic(params) -> (reads, writes)``.
        typed_inputs: A signature parameter whose input types the producer checks pipeline
            inputs against (``"signature"``), if any.
    """

    operation: str
    reads: Mapping[str, str] = field(default_factory=dict)
    writes: tuple[str, ...] = ()
    queue: str = "general"
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    call: Caller | None = None
    dynamic: Callable[[Mapping[str, Any]], tuple[dict[str, str], tuple[str, ...]]] | None = None
    typed_inputs: str | None = None

    def io(self, params: Mapping[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
        """The (reads, writes) of a step with these parameters."""
        if self.dynamic is not None:
            return self.dynamic(params)
        return dict(self.reads), self.writes

    def check_params(self, params: Mapping[str, Any], step: str) -> None:
        """Refuse missing and unknown parameters.

        Raises:
            PipelineValidationError: Naming the step and the parameter.
        """
        missing = [p for p in self.required if p not in params]
        if missing:
            raise PipelineValidationError(
                f"step {step!r}: operation {self.operation!r} needs the parameter(s) "
                f"{', '.join(missing)}",
                step=step,
                field=missing[0],
            )
        known = set(self.required) | set(self.optional)
        unknown = sorted(set(params) - known)
        if unknown:
            raise PipelineValidationError(
                f"step {step!r}: operation {self.operation!r} takes no parameter "
                f"{unknown[0]!r} (it takes: {', '.join(sorted(known)) or 'none'})",
                step=step,
                field=unknown[0],
            )


def default_call(
    where: NativeCall,
    params: Mapping[str, Any],
    values: Mapping[str, Any],
    outputs: tuple[str, ...],
) -> dict[str, Any]:
    """Call the operation with params and values as keywords; shape the value into outputs."""
    operation = where.operation
    value = where.router.call(operation, **params, **values)
    if len(outputs) == 1:
        return {outputs[0]: value}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"operation {operation!r} returned {type(value).__name__}; a step "
            f"writing {', '.join(outputs)} needs a mapping with those keys"
        )
    return {name: value[name] for name in outputs if name in value}


def _validate_io(params: Mapping[str, Any]) -> tuple[dict[str, str], tuple[str, ...]]:
    from dspex_jobs.signature import Signature

    text = params.get("signature")
    if not isinstance(text, str):
        raise PipelineValidationError(
            "signature.validate needs a 'signature' text", field="signature"
        )
    try:
        names = tuple(f.name for f in Signature.parse(text).inputs)
    except SignatureError as exc:
        raise PipelineValidationError(f"signature.validate: {exc}", field="signature") from None
    return {name: name for name in names}, names


def _call_validate(
    where: NativeCall, params: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    checked = where.router.call(
        where.operation, params["signature"], dict(values), instructions=params.get("instructions")
    )
    return dict(checked)


def _call_search(
    where: NativeCall, params: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """On a ``neural`` worker, search in process (its model and indexes are here, and a job
    waiting on another job of its own pool could wait for ever); elsewhere through the
    router's ``search`` (a job on the ``neural`` queue, submitted with the worker's settings)."""
    index, query, k = params["index"], values["query"], int(params.get("k", 5))
    if where.queue == "neural" and where.settings is not None:
        from dspex_jobs.neural.limits import check_index_name, check_k, check_texts
        from dspex_jobs.neural.service import neural_service

        check_index_name(index)
        check_k(k)
        service = neural_service(where.settings)
        queries = check_texts([query], service.limits, field="query")
        hits = list(service.search(index, queries, k)["results"][0])
    else:
        from dspex_jobs.neural.operations import default_client

        client = default_client(where.settings) if where.settings is not None else None
        hits = list(
            where.router.call(where.operation, index=index, query=query, k=k, client=client)
        )
    passages = [
        str(h.get("document") or h.get("text") or "") if isinstance(h, Mapping) else str(h)
        for h in hits
    ]
    return {"passages": passages, "hits": hits}


def _call_metric(
    where: NativeCall, params: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    score = where.router.call(where.operation, values["prediction"], values["answers"])
    return {"score": float(score)}


_lock = threading.Lock()
_specs: dict[str, OperationSpec] = {}


def register_spec(spec: OperationSpec, *, replace: bool = False) -> OperationSpec:
    """Declare how an operation fits in a pipeline (see :class:`OperationSpec`).

    Raises:
        ValueError: A spec for the operation exists and ``replace`` is false.
    """
    with _lock:
        if spec.operation in _specs and not replace:
            raise ValueError(
                f"operation {spec.operation!r} already has a pipeline spec; "
                "pass replace=True to replace it"
            )
        _specs[spec.operation] = spec
    return spec


def operation_spec(operation: str) -> OperationSpec | None:
    """The spec of ``operation``, or ``None`` for operations steps must describe themselves."""
    return _specs.get(operation)


register_spec(
    OperationSpec(
        "signature.validate",
        dynamic=_validate_io,
        required=("signature",),
        optional=("instructions",),
        call=_call_validate,
        typed_inputs="signature",
    )
)
register_spec(
    OperationSpec(
        "search",
        reads={"query": "question"},
        writes=("passages", "hits"),
        queue="neural",
        required=("index",),
        optional=("k",),
        call=_call_search,
    )
)
for _metric in ("metric.exact_match", "metric.token_f1"):
    register_spec(
        OperationSpec(
            _metric,
            reads={"prediction": "answer", "answers": "answers"},
            writes=("score",),
            call=_call_metric,
        )
    )
