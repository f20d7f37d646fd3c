"""The program registry (real Redis, database 22), references, specs and request checks."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import redis_db_url

from dspex_jobs.errors import (
    OptimizeRequestError,
    PayloadTooLarge,
    ProgramNotFound,
    ValidationError,
)
from dspex_jobs.keys import Keys
from dspex_jobs.optimize.datasets import check_rows, load_rows
from dspex_jobs.optimize.handle import render_progress
from dspex_jobs.optimize.progress import Progress
from dspex_jobs.optimize.request import (
    OPTIMIZERS,
    canonical_optimizer,
    check_optimizer_args,
    dataset_hash,
)
from dspex_jobs.programs import ProgramRef, ProgramRegistry, ProgramSpec

DB = 22
SPEC = ProgramSpec(module="predict", signature="question -> answer")


@pytest.fixture
def registry(redis_server: Any) -> Iterator[ProgramRegistry]:
    client = redis.Redis.from_url(redis_db_url(redis_server, DB))
    client.flushdb()
    yield ProgramRegistry(client, Keys("t"), max_bytes=20_000)
    client.flushdb()
    client.close()


def test_refs_parse_versions_aliases_and_latest() -> None:
    assert ProgramRef.parse("qa") == ProgramRef("qa", None, "latest")
    assert ProgramRef.parse("qa@latest") == ProgramRef("qa", None, "latest")
    assert ProgramRef.parse("qa@12") == ProgramRef("qa", 12, None)
    assert str(ProgramRef.parse("qa@production")) == "qa@production"
    for bad in ("", "9qa", "qa@", "qa@0", "qa@pro duction", "q a"):
        with pytest.raises(ValidationError):
            ProgramRef.parse(bad)


def test_spec_needs_a_valid_signature_or_input_fields() -> None:
    assert SPEC.inputs() == ("question",) and SPEC.outputs() == ("answer",)
    assert ProgramSpec(module="rag", input_fields=("question",)).inputs() == ("question",)
    with pytest.raises(ValueError, match="needs a signature"):
        ProgramSpec(module="predict")
    with pytest.raises(ValueError):
        ProgramSpec(module="predict", signature="question: -> answer")
    with pytest.raises(ValueError, match="input_fields"):
        ProgramSpec(module="rag")


def test_versions_count_up_and_aliases_resolve(registry: ProgramRegistry) -> None:
    # Given two saved versions
    first = registry.save("qa", SPEC, {"demos": [1]}, {"score": 0.5})
    second = registry.save("qa", SPEC, {"demos": [2]}, {"score": 0.7})
    # Expect numbers, latest and an alias to resolve as documented
    assert (first.ref, second.ref) == ("qa@1", "qa@2")
    assert registry.resolve("qa") == registry.resolve("qa@latest") == 2
    assert registry.get("qa@1").state == {"demos": [1]}
    with pytest.raises(ProgramNotFound, match="no version promoted as 'production'"):
        registry.resolve("qa@production")
    assert registry.promote("qa@1") == 1
    assert registry.get("qa@production").version == 1
    assert registry.aliases("qa") == {"production": 1}
    [row] = registry.list()
    assert row["latest"] == 2 and row["aliases"] == {"production": 1}
    assert [v.version for v in registry.versions("qa")] == [1, 2]
    with pytest.raises(ProgramNotFound):
        registry.get("qa@3")
    with pytest.raises(ProgramNotFound, match="no program named 'nope'"):
        registry.get("nope@latest")
    with pytest.raises(ValidationError, match="reserved"):
        registry.promote("qa@1", "latest")


def test_defined_program_without_versions(registry: ProgramRegistry) -> None:
    registry.define("qa", {"module": "chain_of_thought", "signature": "question -> answer"})
    assert registry.spec("qa").module == "chain_of_thought"
    with pytest.raises(ProgramNotFound, match="no versions yet"):
        registry.resolve("qa@latest")
    with pytest.raises(ValidationError, match=r"program\.signature|signature"):
        registry.define("bad", {"module": "predict"})


def test_export_import_round_trip_is_plain_json(registry: ProgramRegistry) -> None:
    stored = registry.save(
        "qa", SPEC, {"demos": [{"question": "q", "answer": "a"}]}, {"optimizer": "LabeledFewShot"}
    )
    document = json.loads(json.dumps(registry.export("qa@1")))
    copy = registry.import_(document, name="qa-copy")
    assert copy.ref == "qa-copy@1" and copy.state == stored.state
    assert copy.metadata["imported_from"] == "qa@1"
    assert copy.metadata["optimizer"] == "LabeledFewShot"
    with pytest.raises(ValidationError, match="not a program export"):
        registry.import_({"format": "pickle"})
    with pytest.raises(ValidationError, match="version"):
        registry.import_({**document, "version": "x"})


def test_oversized_versions_are_refused(registry: ProgramRegistry) -> None:
    with pytest.raises(PayloadTooLarge, match="DSPEX_PROGRAM_MAX_BYTES"):
        registry.save("qa", SPEC, {"demos": ["x" * 30_000]})
    assert registry.versions("qa") == []


def test_optimizer_arguments_match_installed_dspy() -> None:
    import dspy

    # Every argument we let travel is a real argument of DSPy's optimizer.
    for name, (init_args, compile_args) in OPTIMIZERS.items():
        cls = getattr(dspy, name)
        assert init_args <= set(inspect.signature(cls.__init__).parameters), name
        assert compile_args <= set(inspect.signature(cls.compile).parameters), name


def test_optimizer_names_and_arguments_are_checked() -> None:
    assert canonical_optimizer("mipro") == "MIPROv2"
    assert canonical_optimizer("bootstrap_few_shot") == "BootstrapFewShot"
    with pytest.raises(OptimizeRequestError, match="did you mean"):
        canonical_optimizer("BootstrapFewShots")
    assert check_optimizer_args("GEPA", {"max_metric_calls": 5}) == {"max_metric_calls": 5}
    with pytest.raises(OptimizeRequestError) as info:
        check_optimizer_args("GEPA", {"reflection_lm": object()})
    assert info.value.details["field"] == "optimizer_args.reflection_lm"


def test_datasets_from_every_format(tmp_path: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("question,answer\nq1,a1\nq2,a2\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.json", "d.csv", "d.parquet"):
        assert load_rows(tmp_path / name) == rows, name
    assert load_rows(rows) == rows
    assert dataset_hash(rows) == dataset_hash([dict(r) for r in rows])
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n{oops\n')
    with pytest.raises(OptimizeRequestError, match="line 2 is not JSON") as info:
        load_rows(tmp_path / "bad.jsonl")
    assert info.value.details["row"] == 1
    with pytest.raises(OptimizeRequestError, match="row 1 is a int"):
        load_rows([{"a": 1}, 5], field="valset")
    with pytest.raises(OptimizeRequestError, match="unknown dataset type"):
        (tmp_path / "d.txt").write_text("x")
        load_rows(tmp_path / "d.txt")
    with pytest.raises(OptimizeRequestError, match="row 0 lacks answer"):
        check_rows([{"question": "q"}], ["question", "answer"], field="trainset")
    with pytest.raises(OptimizeRequestError, match="over the limit"):
        load_rows(rows, max_rows=1)


def test_progress_line() -> None:
    record = Progress(
        "j",
        "BootstrapFewShot",
        phase="bootstrap",
        metric_calls=5,
        budget=10,
        elapsed_s=4.0,
        eta_s=4.0,
        best_score=0.5,
    )
    line = render_progress(record, width=10)
    assert "[#####-----]" in line and "5/10" in line and "best 0.500" in line
    assert "ETA 4s" in line
    assert "?%" in render_progress(Progress("j", "MIPROv2", phase="search"))


def test_loaded_versions_never_carry_their_own_lm() -> None:
    import dspy

    from dspex_jobs.programs import ProgramVersion
    from dspex_jobs.programs.loader import load_version

    # Given a state saved with a predictor-level LM (an imported file could say anything)
    saved = dspy.Predict("question -> answer")
    saved.lm = dspy.LM("openai/elsewhere", api_base="http://127.0.0.1:9/v1")
    saved.demos = [dspy.Example(question="q", answer="a")]
    stored = ProgramVersion(name="qa", version=1, spec=SPEC, state=saved.dump_state())
    assert stored.state["lm"] is not None
    # Expect the demos loaded and the worker's LM kept
    loaded = load_version(stored)
    assert loaded.lm is None and loaded.demos[0]["answer"] == "a"
