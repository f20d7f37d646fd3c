"""The pipeline DSL and its document form: names, data flow, round trips through dict, JSON
and YAML, and what the plan and the canvas look like."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import chord
from celery.canvas import _chain

from dspex_jobs.app import make_app
from dspex_jobs.errors import PipelineValidationError
from dspex_jobs.pipeline import (
    MERGE_TASK,
    STEP_TASK,
    Dspy,
    Fallback,
    Map,
    Native,
    Parallel,
    Pipeline,
    Retry,
    Skip,
    When,
    compile_canvas,
)
from dspex_jobs.pipeline.plan import Plan
from dspex_jobs.router import default_registry
from dspex_jobs.settings import Settings


def echo(**values: object) -> object:
    return next(iter(values.values()), None)


@pytest.fixture(autouse=True, scope="module")
def operations() -> Iterator[None]:
    for name in ("tests.answer", "tests.x"):
        default_registry().register(name, echo, replace=True)
    yield
    for name in ("tests.answer", "tests.x"):
        default_registry().unregister(name)


SEED_YAML = """
name: seed
steps:
  - native: signature.validate
    signature: "question: str -> answer: str"
  - dspy: ChainOfThought
    signature: "question, context: list[str] -> answer"
  - parallel:
      - native: search
        index: docs
        k: 5
      - dspy: Predict
        signature: "question -> keywords: list[str]"
        on_error: skip
"""


def seed() -> Pipeline:
    return Pipeline(
        [
            Native("signature.validate", signature="question: str -> answer: str"),
            Dspy("ChainOfThought", signature="question, context: list[str] -> answer"),
            Parallel(
                [
                    Native("search", index="docs", k=5),
                    Dspy("Predict", signature="question -> keywords: list[str]", on_error="skip"),
                ]
            ),
        ],
        name="seed",
    )


def test_steps_get_unique_names_derived_from_what_they_run() -> None:
    pipeline = Pipeline(
        [
            Dspy("Predict", signature="question -> answer"),
            Dspy("predict", signature="answer -> summary"),
            Native("signature.validate", signature="summary: str -> x"),
        ]
    )
    assert [s.name for s in pipeline.steps] == ["predict", "predict_2", "signature_validate"]
    # the caller's step objects are left unnamed
    step = Dspy("Predict", signature="question -> answer")
    Pipeline([step])
    assert step.name is None


def test_the_seed_pipeline_reads_what_its_inputs_give() -> None:
    pipeline = seed()
    assert set(pipeline.required_inputs) == {"question", "context"}
    assert [s.name for s in pipeline.leaves()] == [
        "signature_validate",
        "chain_of_thought",
        "search",
        "predict",
    ]


def test_document_round_trips_through_dict_json_and_yaml(tmp_path: Path) -> None:
    pipeline = seed()
    assert Pipeline.from_dict(pipeline.to_dict()) == pipeline
    assert Pipeline.from_json(pipeline.to_json()) == pipeline
    from_yaml = Pipeline.from_yaml(SEED_YAML)
    assert from_yaml == pipeline
    path = tmp_path / "seed.yaml"
    path.write_text(SEED_YAML)
    assert Pipeline.load(path) == pipeline


def test_every_kind_of_step_and_policy_round_trips() -> None:
    pipeline = Pipeline(
        [
            Native(
                "search",
                index="docs",
                k=3,
                name="retrieve",
                timeout_s=5,
                on_error=Retry(2, backoff_s=0.5, then=Skip({"passages": []})),
            ),
            Map("passages", Dspy("Predict", signature="passage -> gist"), max_concurrency=2),
            When(
                "len(passages) > 0",
                Dspy(
                    "ChainOfThought",
                    signature="question, passages: list[str] -> answer",
                    lm={"temperature": 0.2},
                ),
                Native(
                    "tests.answer",
                    name="canned",
                    outputs=["answer"],
                    queue="general",
                    inputs={"question": "question"},
                ),
                name="have_passages",
            ),
            Parallel(
                [
                    Dspy("Predict", signature="answer -> tags: list[str]", name="tags_a"),
                    [
                        Dspy(
                            "Predict",
                            signature="question -> tags: list[str]",
                            name="tags_b",
                            on_error=Fallback(
                                Dspy("Predict", signature="question -> tags: list[str]")
                            ),
                        )
                    ],
                ],
                merge={"tags": "unique"},
            ),
        ],
        inputs=["question"],
        timeout_s=60,
    )
    document = pipeline.to_dict()
    assert Pipeline.from_dict(document).to_dict() == document
    assert document["steps"][0]["on_error"] == {
        "retry": 2,
        "backoff_s": 0.5,
        "then": {"skip": {"defaults": {"passages": []}}},
    }
    assert document["steps"][2]["when"] == "len(passages) > 0"


def test_parallel_outputs_are_kept_flat_and_merged_fields_written_by_the_merge() -> None:
    pipeline = Pipeline(
        [
            Parallel(
                [
                    Dspy("Predict", signature="question -> tags: list[str]", name="a"),
                    Dspy("Predict", signature="question -> tags: list[str], mood", name="b"),
                ],
                merge={"tags": "concat"},
                name="both",
            )
        ]
    )
    plan = pipeline.plan()
    assert plan.nodes["a"].writes == [] and plan.nodes["b"].writes == ["mood"]
    assert plan.nodes["both"].kind == "merge" and plan.nodes["both"].final
    assert plan.nodes["both"].merge == {"tags": ["concat", ["a", "b"]]}


def test_plan_lays_out_when_branches_with_guards_and_survives_storage() -> None:
    pipeline = Pipeline(
        [
            When(
                "not question",
                Native("tests.x", name="yes", outputs=["out"]),
                Native("tests.x", name="no", outputs=["out"]),
                name="empty",
            ),
        ],
        inputs=["question"],
    )
    plan = pipeline.plan()
    assert plan.layout == [{"step": "yes"}, {"step": "no"}]
    assert plan.nodes["yes"].guards == [["empty", True]]
    assert plan.nodes["no"].guards == [["empty", False]] and plan.nodes["no"].final
    assert plan.whens == {"empty": "not question"}
    assert Plan.from_json(plan.to_json()) == plan


def test_the_canvas_is_a_chain_with_one_flat_chord_per_parallel() -> None:
    app = make_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    canvas = compile_canvas(app, seed().plan(), "0" * 32)
    assert isinstance(canvas, _chain)
    first, _, parallel = canvas.tasks
    assert (first.task, first.args, first.options["queue"]) == (
        STEP_TASK,
        ("0" * 32, "signature_validate"),
        "general",
    )
    assert first.immutable and first.options["task_id"] == "0" * 32 + ".signature_validate"
    assert isinstance(parallel, chord)
    header = list(parallel.tasks)
    assert [(t.args[1], t.options["queue"]) for t in header] == [
        ("search", "neural"),
        ("predict", "general"),
    ]
    assert parallel.body.task == MERGE_TASK and parallel.body.args[1] == "parallel"


def test_a_branch_of_several_steps_is_a_chain_inside_the_chord() -> None:
    app = make_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    pipeline = Pipeline(
        [
            Parallel(
                [
                    [
                        Dspy("Predict", signature="question -> a"),
                        Dspy("Predict", signature="a -> b"),
                    ],
                    Dspy("Predict", signature="question -> c"),
                ]
            )
        ]
    )
    canvas = compile_canvas(app, pipeline.plan(), "1" * 32)
    assert isinstance(canvas, chord)
    assert isinstance(next(iter(canvas.tasks)), _chain)


def test_check_inputs_converts_typed_inputs_and_refuses_unknown_ones() -> None:
    pipeline = Pipeline([Native("signature.validate", signature="n: int, q -> x")])
    assert pipeline.check_inputs({"n": "3", "q": "?"}) == {"n": 3, "q": "?"}
    with pytest.raises(PipelineValidationError, match="did you mean 'q'"):
        pipeline.check_inputs({"n": 1, "q": "?", "qq": 1})
    with pytest.raises(PipelineValidationError) as caught:
        pipeline.check_inputs({"n": 1})
    assert caught.value.details == {"step": "signature_validate", "field": "q"}


def test_building_and_compiling_a_pipeline_imports_nothing_worker_only() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from dspex_jobs.app import make_app\n"
        "from dspex_jobs.settings import Settings\n"
        "from dspex_jobs.pipeline import Pipeline, compile_canvas\n"
        f"p = Pipeline.from_yaml({SEED_YAML!r})\n"
        "p.check_inputs({'question': 'q', 'context': ['c']})\n"
        "compile_canvas(make_app(Settings(redis_url='redis://127.0.0.1:1/0')), p.plan(), 'r')\n"
        "heavy = ('dspy', 'litellm', 'torch', 'sentence_transformers', 'numpy')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


def test_cli_run_refuses_a_bad_document_before_sending_anything(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dspex_jobs.cli import main

    document = tmp_path / "bad.yaml"
    document.write_text("steps:\n  - shell: rm -rf /\n")
    # Redis on a closed port: the document is refused before anything connects
    result = CliRunner().invoke(
        main,
        ["run", str(document), "-i", "question=?"],
        env={"DSPEX_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.exit_code == 1
    assert "pipeline_validation_error" in result.output and "steps[0]" in result.output
