"""The versioned program registry in Redis: ``qa@1``, ``qa@2``, ..., aliases, export/import.

Layout (names from :class:`~dspex_jobs.keys.Keys`):

- ``dspex:program:<name>``: a hash with ``spec`` (the definition, JSON), ``latest`` (the
  newest version number, bumped by ``HINCRBY`` so two writers never share a number) and
  ``alias:<alias>`` (the version an alias points at, e.g. ``alias:production``).
- ``dspex:program:<name>:v:<n>``: one :class:`~.spec.ProgramVersion` as JSON. Versions are
  immutable; workers cache loaded modules by ``(name, version)`` and only resolve an alias
  (one ``HGET``) per job, so a promote is seen by the next job without any broadcast.
- ``dspex:programs``: the set of names.

Nothing here imports DSPy: producers, the CLI and workers all use it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis
from pydantic import ValidationError as PydanticValidationError

from dspex_jobs.errors import PayloadTooLarge, ProgramNotFound, ValidationError
from dspex_jobs.keys import Keys
from dspex_jobs.programs.spec import (
    EXPORT_FORMAT,
    ProgramRef,
    ProgramSpec,
    ProgramVersion,
    check_alias,
    check_name,
)

__all__ = ["ProgramRegistry", "ProgramSummary"]

ProgramSummary = dict[str, Any]
"""One row of :meth:`ProgramRegistry.list`: name, module, signature, latest, aliases."""


class ProgramRegistry:
    """Defines, stores, resolves, promotes, exports and imports programs.

    Args:
        client: The Redis holding the registry.
        keys: Key builders (its prefix namespaces the registry).
        max_bytes: Largest version accepted (JSON), so a runaway state cannot fill Redis.
    """

    def __init__(self, client: redis.Redis, keys: Keys, max_bytes: int = 8_000_000) -> None:
        self.client = client
        self.keys = keys
        self.max_bytes = max_bytes

    # -- definitions -----------------------------------------------------------------------

    def define(self, name: str, spec: ProgramSpec | Mapping[str, Any]) -> ProgramSpec:
        """Record (or replace) what ``name`` is, before or between versions.

        Raises:
            ValidationError: A malformed name or spec.
        """
        check_name(name)
        parsed = _spec(spec)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            self.keys.program(name),
            mapping={"spec": parsed.model_dump_json(), "updated_at": time.time()},
        )
        pipe.sadd(self.keys.programs(), name)
        pipe.execute()
        return parsed

    def spec(self, name: str) -> ProgramSpec:
        """The definition of ``name``.

        Raises:
            ProgramNotFound: No program of that name.
        """
        raw = self.client.hget(self.keys.program(check_name(name)), "spec")
        if raw is None:
            raise ProgramNotFound(
                f"no program named {name!r}; define it (client.programs."
                "define) or run an optimization that creates it",
                name=name,
            )
        return ProgramSpec.model_validate_json(raw)

    def exists(self, name: str) -> bool:
        """Whether ``name`` is defined."""
        return bool(self.client.hexists(self.keys.program(name), "spec"))

    # -- versions --------------------------------------------------------------------------

    def save(
        self,
        name: str,
        spec: ProgramSpec,
        state: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> ProgramVersion:
        """Store a new version (the next number) and make it ``latest``.

        Raises:
            PayloadTooLarge: The version is over ``max_bytes``.
        """
        check_name(name)
        draft = ProgramVersion(
            name=name, version=1, spec=spec, state=dict(state), metadata=dict(metadata or {})
        )
        size = len(draft.model_dump_json())
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"program {name} is {size} bytes as JSON, over the limit of "
                f"{self.max_bytes} (DSPEX_PROGRAM_MAX_BYTES)",
                size=size,
                limit=self.max_bytes,
            )
        key = self.keys.program(name)
        version = int(self.client.hincrby(key, "next", 1))
        stored = draft.model_copy(update={"version": version})
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.program_version(name, version), stored.model_dump_json())
        pipe.hset(key, mapping={"spec": spec.model_dump_json(), "updated_at": time.time()})
        pipe.sadd(self.keys.programs(), name)
        pipe.execute()
        # Only ever move `latest` forward, even if a slower writer finishes after a faster one.
        self.client.eval(_BUMP_LATEST, 1, key, version)
        return stored

    def resolve(self, ref: str | ProgramRef) -> int:
        """The version number ``ref`` names now (one round trip).

        Raises:
            ProgramNotFound: No such program, version or alias.
        """
        parsed = ProgramRef.parse(ref) if isinstance(ref, str) else ref
        key = self.keys.program(parsed.name)
        if parsed.version is not None:
            if not self.client.exists(self.keys.program_version(parsed.name, parsed.version)):
                raise ProgramNotFound(
                    f"program {parsed.name} has no version {parsed.version}",
                    name=parsed.name,
                    ref=str(parsed),
                )
            return parsed.version
        field = "latest" if parsed.alias == "latest" else f"alias:{parsed.alias}"
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(key, field)
        pipe.exists(key)
        raw, exists = pipe.execute()
        if raw is None:
            if not exists:
                raise ProgramNotFound(
                    f"no program named {parsed.name!r}", name=parsed.name, ref=str(parsed)
                )
            what = (
                "no versions yet (run an optimization)"
                if parsed.alias == "latest"
                else f"no version promoted as {parsed.alias!r} (dspex-jobs programs promote)"
            )
            raise ProgramNotFound(
                f"program {parsed.name} has {what}", name=parsed.name, ref=str(parsed)
            )
        return int(raw)

    def get(self, ref: str | ProgramRef) -> ProgramVersion:
        """The version ``ref`` names.

        Raises:
            ProgramNotFound: No such program, version or alias.
        """
        parsed = ProgramRef.parse(ref) if isinstance(ref, str) else ref
        version = self.resolve(parsed)
        return self.load(parsed.name, version)

    def load(self, name: str, version: int) -> ProgramVersion:
        """Version ``version`` of ``name``.

        Raises:
            ProgramNotFound: It does not exist.
        """
        raw = self.client.get(self.keys.program_version(name, version))
        if raw is None:
            raise ProgramNotFound(
                f"program {name} has no version {version}", name=name, ref=f"{name}@{version}"
            )
        return ProgramVersion.model_validate_json(raw)

    def versions(self, name: str) -> list[ProgramVersion]:
        """Every stored version of ``name``, oldest first."""
        latest = int(self.client.hget(self.keys.program(name), "latest") or 0)
        newest = max(latest, int(self.client.hget(self.keys.program(name), "next") or 0))
        keys = [self.keys.program_version(name, v) for v in range(1, newest + 1)]
        raws = self.client.mget(keys) if keys else []
        return [ProgramVersion.model_validate_json(r) for r in raws if r is not None]

    # -- aliases ---------------------------------------------------------------------------

    def promote(self, ref: str, alias: str = "production") -> int:
        """Point ``alias`` at the version ``ref`` names; returns that version.

        Workers resolve the alias per job, so the next job uses it; jobs running now finish
        on the version they loaded.

        Raises:
            ProgramNotFound: ``ref`` names nothing.
            ValidationError: ``alias`` is malformed or ``latest``.
        """
        parsed = ProgramRef.parse(ref)
        version = self.resolve(parsed)
        self.client.hset(self.keys.program(parsed.name), f"alias:{check_alias(alias)}", version)
        return version

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for ``name``."""
        fields = self.client.hgetall(self.keys.program(name))
        return {
            _text(k)[len("alias:") :]: int(v)
            for k, v in fields.items()
            if _text(k).startswith("alias:")
        }

    # -- listing, export, import -----------------------------------------------------------

    def names(self) -> list[str]:
        """Every program name, sorted."""
        return sorted(_text(n) for n in self.client.smembers(self.keys.programs()))

    def list(self) -> list[ProgramSummary]:
        """One summary per program: name, module, signature, latest version, aliases."""
        rows = []
        for name in self.names():
            fields = {
                _text(k): _text(v) for k, v in self.client.hgetall(self.keys.program(name)).items()
            }
            if "spec" not in fields:
                continue
            spec = ProgramSpec.model_validate_json(fields["spec"])
            rows.append(
                {
                    "name": name,
                    "module": spec.module,
                    "signature": spec.signature,
                    "latest": int(fields["latest"]) if "latest" in fields else None,
                    "aliases": {
                        k[len("alias:") :]: int(v)
                        for k, v in fields.items()
                        if k.startswith("alias:")
                    },
                    "updated_at": float(fields.get("updated_at", 0)),
                }
            )
        return rows

    def export(self, ref: str) -> dict[str, Any]:
        """The version ``ref`` names, as a portable JSON document."""
        return self.get(ref).export()

    def import_(self, document: Mapping[str, Any], *, name: str | None = None) -> ProgramVersion:
        """Store an exported version as a new version here (under ``name`` if given).

        Its metadata keeps the original's and gains ``imported_from`` (the original ref).

        Raises:
            ValidationError: The document is not an export, or from a newer format.
        """
        if not isinstance(document, Mapping):  # e.g. a JSON list from `programs import`
            raise ValidationError(
                f"not a program export: expected a JSON object, not {type(document).__name__}",
                field="format",
            )
        data = dict(document)
        fmt = data.pop("format", None)
        if fmt != EXPORT_FORMAT:
            raise ValidationError(
                f"not a program export: format is {fmt!r}, expected {EXPORT_FORMAT!r}",
                field="format",
            )
        try:
            original = ProgramVersion.model_validate(data)
        except PydanticValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            raise ValidationError(f"program export: {field}: {error['msg']}", field=field) from None
        metadata = {
            **original.metadata,
            "imported_from": original.ref,
            "imported_created_at": original.created_at,
        }
        return self.save(name or original.name, original.spec, original.state, metadata)

    def delete(self, name: str) -> bool:
        """Remove a program and every version (tests, cleanup)."""
        keys = [self.keys.program_version(v.name, v.version) for v in self.versions(name)]
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.program(name), *keys)
        pipe.srem(self.keys.programs(), name)
        return bool(pipe.execute()[0])


_BUMP_LATEST = """
local current = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0')
if tonumber(ARGV[1]) > current then redis.call('HSET', KEYS[1], 'latest', ARGV[1]) end
return 1
"""


def _spec(spec: ProgramSpec | Mapping[str, Any]) -> ProgramSpec:
    if isinstance(spec, ProgramSpec):
        return spec
    try:
        return ProgramSpec.model_validate(dict(spec))
    except PydanticValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "program"
        raise ValidationError(
            f"program spec: {field}: {error['msg']}", field=f"program.{field}"
        ) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dumps(document: Mapping[str, Any]) -> str:
    """Indented JSON for exports."""
    return json.dumps(document, indent=2, sort_keys=True)
