"""Vector indexes in Redis: what survives worker restarts and what every neural worker shares.

An index is four hashes under ``dspex:index:<name>:`` (see :class:`~dspex_jobs.keys.Keys`):

``meta``
    ``model``, ``dim``, ``version``, ``created_at``, ``updated_at``;
``vectors``
    document id -> its unit vector, little-endian float32 bytes;
``documents``
    document id -> its text;
``metadata``
    document id -> its metadata as a JSON object (only for documents that have one).

Every change is one Lua script, so it is atomic: the size limit and the model check hold
under concurrent adds, a document never exists with a vector but no text, and ``version``
moves exactly once per change. A worker reads a whole index in one ``MULTI`` (a consistent
snapshot at one version) and keeps it in memory until the version moves
(:mod:`dspex_jobs.neural.search`).

This module needs only redis: producers use it for ``info``, ``delete`` and ``drop``, which
need no model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis

from dspex_jobs.errors import IndexFull, IndexMismatch, IndexNotFound
from dspex_jobs.keys import Keys
from dspex_jobs.neural.records import IndexInfo

__all__ = ["IndexSnapshot", "IndexStore", "StoredAdd"]

_ADD: Final = """
local max_docs, dim, model, now, n = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local have_dim = redis.call('HGET', KEYS[1], 'dim')
if have_dim then
  local have_model = redis.call('HGET', KEYS[1], 'model')
  if have_dim ~= dim or have_model ~= model then return {'mismatch', have_model, have_dim} end
end
local new = 0
for i = 0, n - 1 do
  if redis.call('HEXISTS', KEYS[2], ARGV[6 + i * 4]) == 0 then new = new + 1 end
end
local count = redis.call('HLEN', KEYS[2])
if count + new > max_docs then return {'full', tostring(count), tostring(new)} end
for i = 0, n - 1 do
  local at = 6 + i * 4
  local id = ARGV[at]
  redis.call('HSET', KEYS[2], id, ARGV[at + 1])
  redis.call('HSET', KEYS[3], id, ARGV[at + 2])
  if ARGV[at + 3] == '' then redis.call('HDEL', KEYS[4], id)
  else redis.call('HSET', KEYS[4], id, ARGV[at + 3]) end
end
if not have_dim then redis.call('HSET', KEYS[1], 'dim', dim, 'model', model, 'created_at', now) end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_at', now)
return {'ok', tostring(new), tostring(count + new), tostring(version)}
"""
"""KEYS: meta, vectors, documents, metadata. ARGV: max_docs, dim, model, now, n, then
(id, vector, document, metadata or '') per document."""

_DELETE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
  redis.call('HDEL', KEYS[4], ARGV[i])
end
if removed > 0 then
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
end
return removed
"""
"""KEYS: meta, vectors, documents, metadata. ARGV: now, then the ids. -1: no such index."""


@dataclass(frozen=True, slots=True)
class StoredAdd:
    """What an add changed: new documents, the count and the version afterwards."""

    added: int
    count: int
    version: int


@dataclass(frozen=True, slots=True)
class IndexSnapshot:
    """A whole index at one version, as raw bytes from Redis (decoded by the worker)."""

    name: str
    version: int
    model: str
    dim: int
    vectors: dict[bytes, bytes]
    documents: dict[bytes, bytes]
    metadata: dict[bytes, bytes]


class IndexStore:
    """Reads and changes vector indexes in one Redis, under one key prefix.

    Args:
        client: The Redis client (bytes responses: vectors are binary).
        keys: Key builders for the deployment's prefix.
        max_docs: Most documents one index may hold.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, max_docs: int) -> None:
        self.client = client
        self.keys = keys
        self.max_docs = max_docs
        self._add = client.register_script(_ADD)
        self._delete = client.register_script(_DELETE)

    def _keys(self, name: str) -> list[str]:
        k = self.keys
        return [
            k.index_meta(name),
            k.index_vectors(name),
            k.index_documents(name),
            k.index_metadata(name),
        ]

    def exists(self, name: str) -> bool:
        """Whether the index exists (it is created by its first add)."""
        return bool(self.client.exists(self.keys.index_meta(name)))

    def version(self, name: str) -> int | None:
        """The index's version, or ``None`` when there is no such index."""
        raw = self.client.hget(self.keys.index_meta(name), "version")
        return None if raw is None else int(raw)

    def info(self, name: str) -> IndexInfo:
        """Facts about the index.

        Raises:
            IndexNotFound: There is no such index.
        """
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys.index_meta(name))
        pipe.hlen(self.keys.index_vectors(name))
        meta, count = pipe.execute()
        if not meta:
            raise _not_found(name)
        fields = {_text(k): _text(v) for k, v in meta.items()}
        return IndexInfo(
            name=name,
            count=int(count),
            dim=int(fields["dim"]),
            model=fields["model"],
            version=int(fields.get("version", 0)),
            created_at=float(fields["created_at"]),
            updated_at=float(fields.get("updated_at", fields["created_at"])),
            max_docs=self.max_docs,
        )

    def add(
        self,
        name: str,
        *,
        ids: Sequence[str],
        vectors: Sequence[bytes],
        documents: Sequence[str],
        metadata: Sequence[str | None],
        dim: int,
        model: str,
    ) -> StoredAdd:
        """Add or replace documents (by id), creating the index on its first add.

        Raises:
            IndexFull: The new documents would take it past ``max_docs``; nothing was added.
            IndexMismatch: The index holds vectors of another model or size.
        """
        args: list[Any] = [self.max_docs, dim, model, repr(time.time()), len(ids)]
        for doc_id, vector, document, meta in zip(ids, vectors, documents, metadata, strict=True):
            args += [doc_id, vector, document, meta or ""]
        reply = self._add(keys=self._keys(name), args=args)
        status = _text(reply[0])
        if status == "mismatch":
            raise IndexMismatch(
                f"index {name!r} holds {_text(reply[2])}-dimension vectors of model "
                f"{_text(reply[1])!r}; this worker embeds with {model!r} ({dim} dimensions): "
                "use another index, or a worker with the same model",
                index=name,
                model=_text(reply[1]),
                dim=int(reply[2]),
            )
        if status == "full":
            count, new = int(reply[1]), int(reply[2])
            raise IndexFull(
                f"index {name!r} holds {count} documents; adding {new} new ones would pass the "
                f"limit of {self.max_docs} (DSPEX_NEURAL_INDEX_MAX_DOCS)",
                index=name,
                count=count,
                new=new,
                limit=self.max_docs,
            )
        return StoredAdd(added=int(reply[1]), count=int(reply[2]), version=int(reply[3]))

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Remove documents by id; ids not in the index are ignored. Returns how many went.

        Raises:
            IndexNotFound: There is no such index.
        """
        removed = int(self._delete(keys=self._keys(name), args=[repr(time.time()), *ids]))
        if removed < 0:
            raise _not_found(name)
        return removed

    def drop(self, name: str) -> bool:
        """Remove the whole index; ``False`` if there was none."""
        return bool(self.client.delete(*self._keys(name)))

    def snapshot(self, name: str) -> IndexSnapshot:
        """The whole index at one version (one ``MULTI``).

        Raises:
            IndexNotFound: There is no such index.
        """
        meta_key, vectors_key, documents_key, metadata_key = self._keys(name)
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(meta_key)
        pipe.hgetall(vectors_key)
        pipe.hgetall(documents_key)
        pipe.hgetall(metadata_key)
        meta, vectors, documents, metadata = pipe.execute()
        if not meta:
            raise _not_found(name)
        fields = {_text(k): _text(v) for k, v in meta.items()}
        return IndexSnapshot(
            name,
            int(fields.get("version", 0)),
            fields["model"],
            int(fields["dim"]),
            vectors,
            documents,
            metadata,
        )

    def names(self) -> list[str]:
        """Every index's name, sorted."""
        prefix, suffix = self.keys.index_meta("\0").split("\0")
        found = (
            _text(key) for key in self.client.scan_iter(match=self.keys.index_pattern(), count=500)
        )
        return sorted(key[len(prefix) : -len(suffix)] for key in found)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _not_found(name: str) -> IndexNotFound:
    return IndexNotFound(
        f"no vector index named {name!r}: an index is created by its first add", index=name
    )
