"""The neural queue end to end: a real in-process worker (threads pool), the real
all-MiniLM-L6-v2 model, real Redis. Embeddings against in-process encode, search quality on a
labelled corpus, consistency under concurrency, typed errors, health, and the DSPy adapters."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from conftest import make_settings, redis_db_url

from dspex_jobs import (
    Client,
    IndexFull,
    IndexMismatch,
    IndexNotFound,
    NeuralInputError,
    TextTooLong,
)
from dspex_jobs.app import make_app
from dspex_jobs.embedded import EmbeddedRedis
from dspex_jobs.health import check_health
from dspex_jobs.jobs import Job, JobKind
from dspex_jobs.keys import Keys
from dspex_jobs.neural.index_store import IndexStore
from dspex_jobs.settings import Settings
from dspex_jobs.worker import install_worker_hooks

pytestmark = pytest.mark.integration

# (document id, document). Twenty of them are the answers to QUERIES.
CORPUS: list[tuple[str, str]] = [
    ("paris", "Paris is the capital and largest city of France."),
    ("tokyo", "Tokyo is the capital of Japan and one of the most populous cities on Earth."),
    ("canberra", "Canberra, not Sydney, is the capital city of Australia."),
    ("nile", "The Nile flows north through eleven African countries into the Mediterranean."),
    ("everest", "Mount Everest in the Himalayas is the highest mountain above sea level."),
    ("sahara", "The Sahara is the largest hot desert in the world, covering North Africa."),
    ("amazon", "The Amazon rainforest produces a large share of the planet's oxygen."),
    ("pacific", "The Pacific is the largest and deepest of Earth's oceans."),
    ("photosynthesis", "Plants turn sunlight, water and carbon dioxide into sugar and oxygen."),
    ("mitochondria", "Mitochondria are the organelles that produce energy in a cell."),
    ("dna", "DNA is a double helix that carries the genetic instructions of living things."),
    ("gravity", "Gravity is the force that pulls objects with mass toward one another."),
    ("light", "Light travels through a vacuum at about 300,000 kilometres per second."),
    ("water_boil", "At sea level, water boils at 100 degrees Celsius."),
    ("moon", "The Moon orbits the Earth roughly once every 27 days."),
    ("mars", "Mars is called the red planet because of iron oxide on its surface."),
    ("jupiter", "Jupiter is the largest planet in the solar system, a gas giant."),
    ("sun", "The Sun is a star made mostly of hydrogen and helium."),
    ("python", "Python is a programming language known for readable code and indentation."),
    ("rust", "Rust is a systems programming language that guarantees memory safety."),
    ("sql", "SQL is the language used to query relational databases."),
    ("git", "Git is a version control system for tracking changes in source code."),
    ("redis", "Redis is an in-memory key-value store often used as a cache or message broker."),
    ("celery", "Celery is a distributed task queue for running background jobs in Python."),
    ("http", "HTTP status code 404 means the requested page was not found."),
    ("tcp", "TCP provides reliable, ordered delivery of bytes between two hosts."),
    ("gpu", "Graphics cards run thousands of threads in parallel to speed up matrix math."),
    ("coffee", "Coffee is brewed from roasted beans and contains caffeine."),
    ("tea", "Green tea is made from unoxidised leaves of the Camellia sinensis plant."),
    ("bread", "Bread dough rises because yeast ferments sugar and releases carbon dioxide."),
    ("pizza", "Pizza originated in Naples, Italy, as a flatbread topped with tomato."),
    ("sushi", "Sushi combines vinegared rice with raw fish or vegetables."),
    ("chocolate", "Chocolate is made from fermented and roasted cacao seeds."),
    ("banana", "Bananas are rich in potassium and grow in tropical climates."),
    ("football", "A football match has two halves of forty-five minutes each."),
    ("tennis", "Wimbledon is the oldest tennis tournament in the world, played on grass."),
    ("chess", "In chess, the queen is the most powerful piece on the board."),
    ("marathon", "A marathon is a long-distance race of 42.195 kilometres."),
    ("olympics", "The modern Olympic Games began in Athens in 1896."),
    ("piano", "A standard piano has 88 keys, black and white."),
    ("beethoven", "Beethoven composed nine symphonies, and kept composing after going deaf."),
    ("guitar", "A classical guitar usually has six nylon strings."),
    ("shakespeare", "Shakespeare wrote Hamlet, Macbeth and Romeo and Juliet."),
    ("printing", "Gutenberg's printing press made books far cheaper in fifteenth-century Europe."),
    ("rome", "The Roman Empire was ruled from Rome by emperors such as Augustus."),
    ("pyramids", "The pyramids of Giza were built as tombs for Egyptian pharaohs."),
    ("penguin", "Penguins are flightless birds that live mostly in the Southern Hemisphere."),
    ("whale", "The blue whale is the largest animal known to have ever lived."),
    ("cheetah", "The cheetah is the fastest land animal, reaching over 100 km/h."),
    ("bees", "Bees pollinate flowers and make honey from nectar."),
]

# (query, the id of the one document that answers it)
QUERIES: list[tuple[str, str]] = [
    ("What is the capital of France?", "paris"),
    ("Which city is Australia's capital?", "canberra"),
    ("What is the tallest mountain in the world?", "everest"),
    ("Which ocean is the biggest?", "pacific"),
    ("How do plants make their food from sunlight?", "photosynthesis"),
    ("What part of a cell generates energy?", "mitochondria"),
    ("Why is Mars red?", "mars"),
    ("Which planet is the largest?", "jupiter"),
    ("At what temperature does water boil?", "water_boil"),
    ("How fast does light travel?", "light"),
    ("Which language is memory safe for systems programming?", "rust"),
    ("How do I query a relational database?", "sql"),
    ("What does a 404 error mean?", "http"),
    ("Which tool tracks changes to source code?", "git"),
    ("How do I run background jobs in Python?", "celery"),
    ("Why does bread dough rise?", "bread"),
    ("Where does pizza come from?", "pizza"),
    ("How long is a marathon?", "marathon"),
    ("How many keys does a piano have?", "piano"),
    ("What is the fastest animal on land?", "cheetah"),
]

WARNINGS = [
    # transformers/torch internals on some versions; never ours
    "ignore:.*encoder_attention_mask.*:FutureWarning",
    "ignore:.*TypedStorage is deprecated.*:UserWarning",
]


@pytest.fixture(scope="module")
def settings(redis_server: EmbeddedRedis) -> Settings:
    url = redis_db_url(redis_server, 10)
    redis.Redis.from_url(url).flushdb()
    return make_settings(
        url, job_max_retries=0, neural_index_max_docs=60, neural_max_text_chars=2000
    )


@pytest.fixture(scope="module")
def worker_app(settings: Settings) -> Iterator[Celery]:
    app = make_app(settings)
    install_worker_hooks(app)

    @app.task(name="tests.neural.search_in_a_job")
    def search_in_a_job(index: str, query: str) -> list[dict[str, Any]]:
        from dspex_jobs.neural.operations import search_operation

        return search_operation(index, query, 1)  # as a pipeline's search step calls it

    with start_worker(
        app,
        pool="threads",
        concurrency=8,
        perform_ping_check=False,
        queues=["neural"],
        shutdown_timeout=30,
    ):
        yield app


@pytest.fixture(scope="module")
def client(worker_app: Celery, settings: Settings) -> Iterator[Client]:
    with Client(settings, app=worker_app) as c:
        c.embed(["load the model"], timeout_s=120)
        yield c


@pytest.fixture(scope="module")
def reference() -> Any:
    """A separate, in-process SentenceTransformer: what the queue must agree with."""
    from sentence_transformers import SentenceTransformer

    from dspex_jobs.lmserver.embedder import minilm_model_path

    return SentenceTransformer(str(minilm_model_path()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def corpus_index(client: Client) -> str:
    index = client.index("corpus")
    result = index.add(
        [doc for _, doc in CORPUS],
        ids=[i for i, _ in CORPUS],
        metadata=[{"position": n} for n in range(len(CORPUS))],
    )
    assert (result.added, result.count) == (len(CORPUS), len(CORPUS))
    return index.name


@pytest.mark.filterwarnings(*WARNINGS)
def test_embeddings_match_in_process_encode(client: Client, reference: Any) -> None:
    # Given texts of many lengths, more than one model batch (32 on a CPU)
    texts = [" ".join(["word"] * (n % 40 + 1)) + f" number {n}" for n in range(75)]
    texts += [doc for _, doc in CORPUS[:10]]
    # When embedded through the queue as one job, and as the model gives them in process
    through_queue = client.embed(texts).as_numpy()
    in_process = reference.encode(texts, convert_to_numpy=True)
    # Expect the same vectors to 1e-5
    assert through_queue.shape == (85, 384) and through_queue.dtype == np.float32
    assert np.abs(through_queue - in_process).max() < 1e-5
    normalized = client.embed(texts[:3], normalize=True)
    assert normalized.normalized and normalized.model == "all-MiniLM-L6-v2"
    expected = reference.encode(texts[:3], normalize_embeddings=True)
    assert np.abs(normalized.as_numpy() - expected).max() < 1e-5


@pytest.mark.filterwarnings(*WARNINGS)
def test_concurrent_small_jobs_are_micro_batched_and_each_gets_its_own_vector(
    client: Client,
    reference: Any,
    settings: Settings,
) -> None:
    from dspex_jobs.neural.service import loaded_service

    service = loaded_service(settings)
    assert service is not None, "the in-process worker runs the service"
    before = service.batcher.stats()
    texts = [doc for _, doc in CORPUS[:24]]
    # When 24 one-text jobs run at once on the 8-thread worker
    with ThreadPoolExecutor(12) as pool:
        vectors = list(pool.map(lambda t: client.embed([t]).as_numpy()[0], texts))
    # Expect each job's vector to be its own text's, and model calls shared between jobs
    assert np.abs(np.stack(vectors) - reference.encode(texts)).max() < 1e-5
    after = service.batcher.stats()
    assert after.multi_request_batches > before.multi_request_batches
    assert after.batches - before.batches < 24


@pytest.mark.filterwarnings(*WARNINGS)
def test_search_finds_the_labelled_answer(
    client: Client,
    reference: Any,
    corpus_index: str,
    record_property: Any,
) -> None:
    # Given 50 documents, and 20 queries each answered by one of them
    index = client.index(corpus_index)
    # When searched through the queue (one job with every query)
    results = index.search_many([q for q, _ in QUERIES], k=3)
    queue_recall = sum(
        hits[0].id == answer for hits, (_, answer) in zip(results, QUERIES, strict=True)
    ) / len(QUERIES)
    # And in process, with the same model and numpy
    docs = reference.encode([d for _, d in CORPUS], normalize_embeddings=True)
    queries = reference.encode([q for q, _ in QUERIES], normalize_embeddings=True)
    best = (queries @ docs.T).argmax(axis=1)
    local_recall = sum(
        CORPUS[b][0] == answer for b, (_, answer) in zip(best, QUERIES, strict=True)
    ) / len(QUERIES)
    record_property("recall_at_1_queue", queue_recall)
    record_property("recall_at_1_in_process", local_recall)
    print(f"recall@1: queue {queue_recall:.2f}, in-process {local_recall:.2f}")
    # Expect the queue to find what in-process search finds, and hits to carry everything
    assert queue_recall >= local_recall and queue_recall >= 0.9
    top = results[0][0]
    assert (top.id, top.document, top.metadata) == ("paris", CORPUS[0][1], {"position": 0})
    assert 0 < top.score <= 1 and results[0][0].score >= results[0][1].score


@pytest.mark.filterwarnings(*WARNINGS)
def test_concurrent_adds_and_searches_are_consistent(client: Client) -> None:
    # Given an index that four producers fill while four others search it
    index = client.index("live")
    index.add(["seed document about nothing in particular"], ids=["seed"])
    text_of = {
        f"w{w}-{n}": f"Fact {n} from writer {w}: item {w * 100 + n} is "
        f"{['red', 'green', 'blue', 'gold'][w]} and weighs {n + 1} kilograms."
        for w in range(4)
        for n in range(8)
    }
    problems: list[str] = []
    done = threading.Event()

    def write(writer: int) -> None:
        for n in range(0, 8, 2):
            ids = [f"w{writer}-{n}", f"w{writer}-{n + 1}"]
            index.add([text_of[i] for i in ids], ids=ids, metadata=[{"id": i} for i in ids])

    def search() -> int:
        searches = 0
        while not done.is_set() or searches < 2:
            for hit in index.search("which item is gold and heavy?", k=10):
                expected = text_of.get(hit.id, "seed document about nothing in particular")
                if hit.document != expected or hit.metadata.get("id", "seed") != hit.id:
                    problems.append(f"{hit.id}: {hit.document!r} {hit.metadata}")
            searches += 1
        return searches

    with ThreadPoolExecutor(8) as pool:
        searchers = [pool.submit(search) for _ in range(4)]
        writers = [pool.submit(write, w) for w in range(4)]
        for future in writers:
            future.result(timeout=120)
        done.set()
        assert all(future.result(timeout=120) >= 2 for future in searchers)
    # Expect every hit to pair an id with its own text and metadata, and nothing lost
    assert problems == []
    info = index.info()
    assert info.count == 33 and info.version == 17
    for doc_id in ("w0-0", "w3-7"):
        assert index.search(text_of[doc_id], k=1)[0].id == doc_id


@pytest.mark.filterwarnings(*WARNINGS)
def test_delete_info_and_drop(client: Client) -> None:
    index = client.index("small")
    added = index.add(["alpha centauri is a star system", "beta carotene is in carrots"])
    assert len(added.ids) == 2 and added.version == 1
    again = index.add(["alpha centauri is the nearest star system"], ids=[added.ids[0]])
    assert (again.added, again.replaced, again.count) == (0, 1, 2)
    assert index.delete([added.ids[1], "unknown"]) == 1
    hits = index.search("carrots", k=5)
    assert [h.id for h in hits] == [added.ids[0]]
    assert hits[0].document == "alpha centauri is the nearest star system"
    info = index.info()
    assert (info.count, info.model, info.dim, info.version) == (1, "all-MiniLM-L6-v2", 384, 3)
    assert index.drop() and not index.exists()
    with pytest.raises(IndexNotFound):
        index.info()


def test_bad_input_is_refused_before_anything_is_enqueued(client: Client) -> None:
    with pytest.raises(NeuralInputError, match="is empty"):
        client.embed([])
    with pytest.raises(NeuralInputError, match=r"texts\[1\] is not a string"):
        client.embed(["fine", 42])  # type: ignore[list-item]
    with pytest.raises(TextTooLong, match="over the limit of 2000"):
        client.embed(["x" * 2001])
    with pytest.raises(IndexNotFound, match="no vector index named 'nowhere'"):
        client.index("nowhere").search("anything")
    with pytest.raises(IndexNotFound):
        client.index("nowhere").delete(["a"])
    with pytest.raises(NeuralInputError, match="index name"):
        client.index("no:colons")
    with pytest.raises(NeuralInputError, match="takes texts, not a signature"):
        client.submit(JobKind.EMBED, "question -> answer", {"texts": ["a"]})


@pytest.mark.filterwarnings(*WARNINGS)
def test_the_worker_checks_raw_messages_too(client: Client, worker_app: Celery) -> None:
    # Given envelopes sent without the client's checks
    def raw(kind: JobKind, inputs: dict[str, Any]) -> Any:
        job = Job(kind=kind, inputs=inputs)
        worker_app.send_task(kind.task_name, args=(job.to_wire(),), task_id=job.id, queue="neural")
        return client.job(job.id)

    # Expect the same typed errors from the worker
    with pytest.raises(NeuralInputError, match="is empty"):
        raw(JobKind.EMBED, {"texts": []}).result(timeout=60)
    with pytest.raises(TextTooLong):
        raw(JobKind.EMBED, {"texts": ["y" * 2001]}).result(timeout=60)
    with pytest.raises(IndexNotFound):
        raw(JobKind.INDEX_SEARCH, {"index": "ghost", "queries": ["q"]}).result(timeout=60)
    # And ids derived from the job id when a raw add has none (redelivery-safe)
    result = raw(JobKind.INDEX_ADD, {"index": "raw", "documents": ["one", "two"]})
    outputs = result.result(timeout=60).outputs
    assert outputs["ids"] == [f"{result.id}-0", f"{result.id}-1"]


@pytest.mark.filterwarnings(*WARNINGS)
def test_index_limits_and_model_mismatch_are_typed(client: Client, settings: Settings) -> None:
    with pytest.raises(IndexFull, match="limit of 60") as info:
        client.index("too-big").add([f"document number {n}" for n in range(61)])
    assert info.value.details["limit"] == 60 and not client.index("too-big").exists()
    # Given an index some other model wrote
    store = IndexStore(
        redis.Redis.from_url(settings.redis_url), Keys(settings.key_prefix), max_docs=60
    )
    store.add(
        "foreign",
        ids=["a"],
        vectors=[b"\0" * 16],
        documents=["a"],
        metadata=[None],
        dim=4,
        model="other-model",
    )
    with pytest.raises(IndexMismatch, match="other-model"):
        client.index("foreign").add(["b"])
    with pytest.raises(IndexMismatch):
        client.index("foreign").search("b")


def test_health_reports_the_workers_device(client: Client, settings: Settings) -> None:
    import torch

    (queue,) = check_health(settings, ("neural",)).queues
    assert queue.ok and queue.devices
    assert set(queue.devices.values()) == {"cuda" if torch.cuda.is_available() else "cpu"}


@pytest.mark.filterwarnings(*WARNINGS)
def test_dspy_programs_retrieve_through_the_queue(
    client: Client,
    corpus_index: str,
    reference: Any,
) -> None:
    from dspex_jobs.neural.operations import search_operation
    from dspex_jobs.neural.retrieval import IndexRetriever, queue_embedder

    retrieve = IndexRetriever(corpus_index, k=2, client=client)
    found = retrieve("Which planet is the largest?")
    assert found.indices[0] == "jupiter" and len(found.passages) == 2
    assert found.passages[0] == dict(CORPUS)["jupiter"] and found.scores[0] > found.scores[1]
    embedder = queue_embedder(client)
    vectors = embedder(["hello there", "general kenobi"])
    assert vectors.shape == (2, 384)
    assert (
        np.abs(
            vectors - reference.encode(["hello there", "general kenobi"], normalize_embeddings=True)
        ).max()
        < 1e-5
    )
    hits = search_operation(corpus_index, "How long is a marathon?", 1, client=client)
    assert [h["id"] for h in hits] == ["marathon"] and hits[0]["document"]


@pytest.mark.filterwarnings(*WARNINGS)
def test_search_inside_a_neural_job_runs_in_process(
    worker_app: Celery,
    corpus_index: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dspex_jobs.neural import operations

    def no_queue(*_: object) -> None:
        raise AssertionError("a neural job must not wait on another neural job")

    monkeypatch.setattr(operations, "default_client", no_queue)
    result = worker_app.send_task(
        "tests.neural.search_in_a_job",
        args=(corpus_index, "Why does bread dough rise?"),
        queue="neural",
    )
    hits = result.get(timeout=60)
    assert [h["id"] for h in hits] == ["bread"]
