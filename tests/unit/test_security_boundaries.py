"""Trust boundaries that no other test module covers (the map is in docs/security.md).

Each test hands a boundary what an attacker would: column names written as code, a pickle
where a program export belongs, an export whose predictor state picks its own LM or sets
private attributes, YAML with Python tags, a Redis password that must not reach health
output, an alert URL that is not http(s). Uses Redis database 48.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from conftest import redis_db_url

from dspex_jobs.cli import main
from dspex_jobs.errors import (
    ConfigurationError,
    PipelineValidationError,
    ProgramLoadError,
    ValidationError,
)
from dspex_jobs.health import check_health
from dspex_jobs.keys import Keys
from dspex_jobs.pipeline import Pipeline
from dspex_jobs.programs import ProgramRegistry, ProgramSpec
from dspex_jobs.programs.loader import load_version
from dspex_jobs.programs.spec import ProgramVersion
from dspex_jobs.protocol import decode, encode
from dspex_jobs.protocol._table import row_builder, rows_from_columns
from dspex_jobs.settings import Settings
from dspex_jobs.stack import WorkerProcess
from dspex_jobs.telemetry.alerts import Webhook

DB = 48
SPEC = ProgramSpec(module="predict", signature="question -> answer")
PASSWORD = "hunter2-redis-password"


@pytest.fixture
def registry(redis_server: Any) -> Iterator[ProgramRegistry]:
    client = redis.Redis.from_url(redis_db_url(redis_server, DB))
    client.flushdb()
    yield ProgramRegistry(client, Keys("sec"), max_bytes=20_000)
    client.flushdb()
    client.close()


# -- message bodies: table column names are data, never code ---------------------------------

CODE_LIKE_KEYS = [
    "__import__('os').system('exit 3')",
    "}",
    "c0",
    "zip",
    "columns",
    "lambda: 1",
    "\n# comment",
    "x]; import os; [",
]


def test_table_column_names_that_look_like_code_come_back_as_data() -> None:
    # Given a table whose column names are Python source (the pure-Python decoder compiles
    # a row builder from them)
    rows = [{key: index for key in CODE_LIKE_KEYS} for index in range(300)]
    # When it crosses the wire and is read back (auto sends it column by column)
    back = decode(encode(rows))
    # Expect the same rows: every name a dict key, none evaluated
    assert back == rows
    direct = rows_from_columns(list(CODE_LIKE_KEYS), [[1, 2] for _ in CODE_LIKE_KEYS])
    assert direct == [dict.fromkeys(CODE_LIKE_KEYS, 1), dict.fromkeys(CODE_LIKE_KEYS, 2)]
    # ... and so does the pure-Python builder, used where the C helper is not built
    built = row_builder(tuple(CODE_LIKE_KEYS))([[1, 2] for _ in CODE_LIKE_KEYS])
    assert built == direct


# -- program state files: JSON only, and data only -------------------------------------------


def test_a_pickle_given_to_programs_import_is_refused_without_a_traceback(
    tmp_path: Path, redis_server: Any
) -> None:
    # Given a pickle where a JSON program export belongs
    path = tmp_path / "program.pkl"
    path.write_bytes(pickle.dumps({"format": "dspex-program", "state": {}}))
    # When the CLI imports it, expect a clean refusal, never an unpickle or a traceback
    result = CliRunner().invoke(
        main,
        ["programs", "import", str(path)],
        env={"DSPEX_REDIS_URL": redis_db_url(redis_server, DB)},
    )
    assert result.exit_code == 1
    assert "is not a JSON program export" in result.output
    assert not isinstance(result.exception, UnicodeDecodeError)


def test_an_export_with_an_unknown_field_or_the_wrong_shape_is_refused(
    registry: ProgramRegistry,
) -> None:
    registry.save("qa", SPEC, {})
    document = json.loads(json.dumps(registry.export("qa@1")))
    # An extra field (say, a pickled blob riding along) names itself in the error
    with pytest.raises(ValidationError, match="program export: payload") as info:
        registry.import_({**document, "payload": "gASVAAAAAAAAAAB9lC4="})
    assert info.value.details["field"] == "payload"
    # A JSON value that is not an object is a ValidationError, not a TypeError
    with pytest.raises(ValidationError, match="expected a JSON object"):
        registry.import_([document])  # type: ignore[arg-type]
    assert registry.versions("qa")[-1].version == 1  # nothing was stored


def _predict_state() -> dict[str, Any]:
    import dspy

    return dict(dspy.Predict("question -> answer").dump_state())


def test_imported_predictor_state_cannot_choose_its_lm() -> None:
    # Given a stored state that names its own LM, and has no demos key
    state = {key: value for key, value in _predict_state().items() if key != "demos"}
    state["lm"] = {"model": "openai/attacker-choice", "api_base": "http://127.0.0.1:9/v1"}
    stored = ProgramVersion(name="qa", version=1, spec=SPEC, state=state)
    # When a worker loads it, expect the worker's own LM to stay in charge
    module = load_version(stored)
    assert module.lm is None


@pytest.mark.parametrize("key", ["__dict__", "__class__", "_compiled"])
def test_imported_predictor_state_cannot_set_private_attributes(key: str) -> None:
    stored = ProgramVersion(name="qa", version=1, spec=SPEC, state={**_predict_state(), key: {}})
    with pytest.raises(ProgramLoadError, match="may not start with '_'"):
        load_version(stored)


# -- pipeline documents: YAML is safe_load ---------------------------------------------------


def test_yaml_pipeline_with_python_tags_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"!!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(PipelineValidationError, match="not valid YAML"):
        Pipeline.from_yaml(text)
    assert not marker.exists()


# -- Redis URLs and secrets: never printed ---------------------------------------------------


def test_health_output_never_shows_the_redis_password() -> None:
    # Given an unreachable Redis whose URL carries a password
    url = f"redis://worker:{PASSWORD}@127.0.0.1:1/0"
    report = check_health(Settings.from_env({}, redis_url=url, socket_timeout_s=0.5))
    # Expect neither the text nor the JSON form to show it
    assert not report.ok
    assert PASSWORD not in report.render()
    assert PASSWORD not in json.dumps(report.to_dict())
    result = CliRunner().invoke(
        main, ["health", "--json"], env={"DSPEX_REDIS_URL": url, "DSPEX_SOCKET_TIMEOUT_S": "0.5"}
    )
    assert result.exit_code == 1 and PASSWORD not in result.output


# -- outbound URLs and local files -----------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x", "hooks.example/alert"])
def test_alert_webhook_accepts_only_http_urls(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must be an http"):
        Webhook(url)


def test_worker_log_files_are_created_private() -> None:
    worker = WorkerProcess("general", env={})
    try:
        mode = stat.S_IMODE(os.stat(worker.log_path).st_mode)
        assert mode == 0o600, oct(mode)
    finally:
        os.unlink(worker.log_path)
