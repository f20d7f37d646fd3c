"""The routing strategy: which implementation runs an operation, and on which queue.

The decision reads three things, in this order:

1. **What the caller forces.** ``implementation="native"`` or ``"dspy"`` keeps only that kind;
   any other value names one implementation. Forcing something that does not exist is an error,
   never a silent substitution.
2. **Capability.** A request may need capabilities (``"type:dspy.Image"`` for a signature with
   an image field, ``"streaming"``); an implementation that declared one of them
   ``unsupported`` is passed over, and the route records why.
3. **Preference.** What is left is ordered by kind (``native`` first by default: it runs in
   process, in microseconds, without an LM), then by priority, then by registration order.
   The first is chosen; the rest are its fallbacks, in order.

The queue is the chosen implementation's (``native`` ones run in process: no queue), unless the
job names one. Decisions are pure functions of the registry and the request, so the router
caches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dspex_jobs.errors import NoImplementation, ValidationError
from dspex_jobs.router.registry import Implementation, ImplementationKind
from dspex_jobs.settings import QUEUES
from dspex_jobs.signature.nodes import GenericType, NamedType, TypeExpr, UnionType

if TYPE_CHECKING:
    from dspex_jobs.signature import Signature

__all__ = ["Route", "Strategy", "requirements_of"]


@dataclass(frozen=True, slots=True)
class Route:
    """A routing decision.

    Attributes:
        operation: What is being done.
        implementation: The chosen implementation.
        fallbacks: What to try next if it fails with a fallback-eligible error, in order.
        queue: The workload queue that runs it; ``None`` means in process (native).
        skipped: ``(implementation name, why)`` for every candidate passed over.
    """

    operation: str
    implementation: Implementation
    fallbacks: tuple[Implementation, ...] = ()
    queue: str | None = None
    skipped: tuple[tuple[str, str], ...] = ()

    candidates: tuple[Implementation, ...] = field(init=False, repr=False, compare=False)
    """The chosen implementation, then its fallbacks (computed once: the hot path reads it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", (self.implementation, *self.fallbacks))

    @property
    def in_process(self) -> bool:
        """Whether the chosen implementation runs here (native) rather than on a worker queue."""
        return self.implementation.kind is ImplementationKind.NATIVE


class Strategy:
    """Orders an operation's implementations for one request (see the module docstring).

    Args:
        prefer: Kinds in order of preference; kinds not listed come last.
    """

    def __init__(
        self,
        prefer: Sequence[ImplementationKind | str] = (
            ImplementationKind.NATIVE,
            ImplementationKind.DSPY,
        ),
    ) -> None:
        self.prefer = tuple(ImplementationKind(kind) for kind in prefer)
        self._rank = {kind: i for i, kind in enumerate(self.prefer)}

    def choose(
        self,
        operation: str,
        implementations: Sequence[Implementation],
        *,
        implementation: str | None = None,
        requires: frozenset[str] = frozenset(),
        queue: str | None = None,
    ) -> Route:
        """Decide how to run ``operation``.

        Args:
            operation: The operation.
            implementations: Its implementations, in registration order.
            implementation: A kind (``"native"``, ``"dspy"``) or an implementation name to force.
            requires: Capabilities the request needs.
            queue: The job's queue, overriding a ``dspy`` implementation's own.

        Raises:
            NoImplementation: Nothing matches what is forced, or every candidate declared it
                cannot handle ``requires``.
            ValidationError: ``queue`` is not a known queue.
        """
        if queue is not None and queue not in QUEUES:
            raise ValidationError(
                f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}", field="queue"
            )
        candidates = _forced(operation, implementations, implementation)
        able: list[Implementation] = []
        skipped: list[tuple[str, str]] = []
        for impl in candidates:
            missing = impl.unsupported & requires
            if missing:
                skipped.append((impl.name, f"cannot handle {', '.join(sorted(missing))}"))
            else:
                able.append(impl)
        if not able:
            reasons = "; ".join(f"{name}: {why}" for name, why in skipped)
            raise NoImplementation(
                f"no implementation of {operation!r} can handle this request ({reasons})",
                operation=operation,
                skipped=dict(skipped),
            )
        order = {impl.name: i for i, impl in enumerate(implementations)}
        able.sort(
            key=lambda impl: (
                self._rank.get(impl.kind, len(self._rank)),
                -impl.priority,
                order[impl.name],
            )
        )
        chosen = able[0]
        route_queue = None if chosen.kind is ImplementationKind.NATIVE else (queue or chosen.queue)
        return Route(operation, chosen, tuple(able[1:]), route_queue, tuple(skipped))


def _forced(
    operation: str, implementations: Sequence[Implementation], forced: str | None
) -> list[Implementation]:
    if forced is None:
        return list(implementations)
    kinds = {kind.value for kind in ImplementationKind}
    kept = [
        impl
        for impl in implementations
        if (impl.kind == forced if forced in kinds else impl.name == forced)
    ]
    if not kept:
        available = ", ".join(f"{impl.name} ({impl.kind})" for impl in implementations)
        raise NoImplementation(
            f"operation {operation!r} has no {forced!r} implementation; it has: {available}",
            operation=operation,
            implementation=forced,
        )
    return kept


def requirements_of(signature: Signature) -> frozenset[str]:
    """The capabilities a signature needs: ``"type:<name>"`` for every type its fields name.

    ``"question: str, photo: dspy.Image -> answer: list[str]"`` needs ``type:str``,
    ``type:dspy.Image`` and ``type:list``; an implementation that cannot handle images declares
    ``unsupported={"type:dspy.Image"}``.
    """
    found: set[str] = set()
    for signature_field in signature.fields:
        _collect(signature_field.type, found)
    return frozenset(found)


def _collect(node: TypeExpr, found: set[str]) -> None:
    if isinstance(node, NamedType | GenericType):
        found.add(f"type:{node.spec.name}")
    children = (
        node.args
        if isinstance(node, GenericType)
        else (node.members if isinstance(node, UnionType) else ())
    )
    for child in children:
        _collect(child, found)
