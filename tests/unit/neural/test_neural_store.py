"""Indexes in a real Redis: atomic adds with a size limit and a model check, versions, and
the in-memory copy a worker searches."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from dspex_jobs.errors import IndexFull, IndexMismatch, IndexNotFound
from dspex_jobs.keys import Keys
from dspex_jobs.neural.index_store import IndexStore
from dspex_jobs.neural.search import IndexCache, LoadedIndex, normalize_rows

DIM = 8


@pytest.fixture
def store(redis_url: str) -> Iterator[IndexStore]:
    client = redis.Redis.from_url(redis_url)
    yield IndexStore(client, Keys("t"), max_docs=5)
    client.close()


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    return normalize_rows(np.random.default_rng(seed).standard_normal((count, DIM)))


def add(
    store: IndexStore,
    name: str,
    ids: list[str],
    seed: int = 0,
    model: str = "m",
    metadata: list[str | None] | None = None,
) -> object:
    vectors = unit_vectors(len(ids), seed)
    return store.add(
        name,
        ids=ids,
        vectors=[v.tobytes() for v in vectors],
        documents=[f"doc {i}" for i in ids],
        metadata=metadata or [None] * len(ids),
        dim=DIM,
        model=model,
    )


def test_first_add_creates_the_index_and_each_change_bumps_the_version(
    store: IndexStore,
) -> None:
    assert not store.exists("docs") and store.version("docs") is None
    with pytest.raises(IndexNotFound):
        store.info("docs")
    stored = add(store, "docs", ["a", "b"])
    assert stored == type(stored)(added=2, count=2, version=1)  # type: ignore[call-arg]
    replaced = add(store, "docs", ["b", "c"], seed=1)
    assert (replaced.added, replaced.count, replaced.version) == (1, 3, 2)  # type: ignore[attr-defined]
    info = store.info("docs")
    assert (info.count, info.dim, info.model, info.version, info.max_docs) == (3, DIM, "m", 2, 5)
    assert info.updated_at >= info.created_at
    assert store.delete("docs", ["a", "zzz"]) == 1 and store.version("docs") == 3
    assert store.delete("docs", ["zzz"]) == 0 and store.version("docs") == 3  # no change
    assert store.names() == ["docs"]


def test_the_size_limit_is_atomic_and_all_or_nothing(store: IndexStore) -> None:
    add(store, "docs", ["a", "b", "c"])
    with pytest.raises(IndexFull, match="limit of 5") as info:
        add(store, "docs", ["c", "d", "e", "f"])  # 3 new: 6 > 5
    assert info.value.details == {"index": "docs", "count": 3, "new": 3, "limit": 5}
    assert store.info("docs").count == 3 and store.version("docs") == 1
    add(store, "docs", ["a", "b", "c", "d", "e"])  # replacing does not count twice
    assert store.info("docs").count == 5


def test_another_model_cannot_write_into_an_index(store: IndexStore) -> None:
    add(store, "docs", ["a"])
    with pytest.raises(IndexMismatch, match="model 'm'"):
        add(store, "docs", ["b"], model="other")
    assert store.info("docs").count == 1


def test_delete_and_drop_of_unknown_indexes(store: IndexStore) -> None:
    with pytest.raises(IndexNotFound):
        store.delete("nope", ["a"])
    assert store.drop("nope") is False
    add(store, "docs", ["a"])
    assert store.drop("docs") is True and not store.exists("docs")


def test_snapshot_search_is_exact_cosine(store: IndexStore) -> None:
    ids = ["a", "b", "c", "d", "e"]
    add(store, "docs", ids, metadata=[json.dumps({"n": i}) for i in range(5)])
    loaded = LoadedIndex.from_snapshot(store.snapshot("docs"))
    queries = unit_vectors(3, seed=7)
    results = loaded.search(queries, k=3)
    matrix = np.stack([loaded.matrix[loaded.ids.index(i)] for i in ids])
    for query, hits in zip(queries, results, strict=True):
        scores = matrix @ query
        best = [ids[i] for i in np.argsort(-scores)[:3]]
        assert [h["id"] for h in hits] == best
        assert hits[0]["score"] == pytest.approx(float(scores.max()), abs=1e-6)
        assert hits[0]["document"] == f"doc {hits[0]['id']}"
        assert hits[0]["metadata"] == {"n": ids.index(hits[0]["id"])}
    assert [len(r) for r in loaded.search(queries, k=50)] == [5, 5, 5]


def test_the_cache_reloads_only_when_the_version_moves(store: IndexStore) -> None:
    cache = IndexCache(store)
    add(store, "docs", ["a"])
    first = cache.get("docs")
    assert cache.get("docs") is first and cache.reloads == 1
    add(store, "docs", ["b"])
    assert len(cache.get("docs")) == 2 and cache.reloads == 2
    store.drop("docs")
    with pytest.raises(IndexNotFound):
        cache.get("docs")
    add(store, "docs", ["z"])  # re-created: version 1 again, still reloaded
    assert cache.get("docs").ids == ["z"]


def test_an_empty_index_finds_nothing(store: IndexStore) -> None:
    add(store, "docs", ["a"])
    store.delete("docs", ["a"])
    loaded = LoadedIndex.from_snapshot(store.snapshot("docs"))
    assert len(loaded) == 0 and loaded.search(unit_vectors(2), k=3) == [[], []]
