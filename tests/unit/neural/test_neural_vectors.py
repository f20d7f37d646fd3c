"""Vectors travel as float32 bytes in base64 and come back bit for bit."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from dspex_jobs.errors import PayloadDecodeError
from dspex_jobs.neural.vectors import Embeddings, encode_vectors


def sample(count: int = 3, dim: int = 384) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)


def test_round_trip_is_exact_with_and_without_numpy() -> None:
    matrix = sample()
    outputs = json.loads(json.dumps(encode_vectors(matrix, model="m", normalized=True)))
    embeddings = Embeddings.from_outputs(outputs)
    assert (len(embeddings), embeddings.dim, embeddings.model) == (3, 384, "m")
    assert embeddings.normalized
    assert np.array_equal(embeddings.as_numpy(), matrix)
    assert embeddings.tolist() == matrix.tolist()  # the array("f") path, no numpy
    assert embeddings[-1] == matrix[2].tolist()
    assert embeddings.as_numpy().flags.writeable


def test_the_wire_form_is_compact() -> None:
    matrix = sample(100)
    compact = len(json.dumps(encode_vectors(matrix)))
    as_lists = len(json.dumps(matrix.tolist()))
    assert compact < as_lists / 3, (compact, as_lists)


def test_out_of_range_rows_raise_index_error() -> None:
    embeddings = Embeddings.from_outputs(encode_vectors(sample(2, 4)))
    with pytest.raises(IndexError):
        embeddings[2]


@pytest.mark.parametrize(
    "outputs",
    [
        None,
        {},
        {"dtype": "float64", "vectors_b64": "", "count": 0, "dim": 0},
        {"dtype": "float32", "vectors_b64": "!!!", "count": 1, "dim": 1},
        {
            "dtype": "float32",
            "vectors_b64": base64.b64encode(b"abc").decode(),
            "count": 1,
            "dim": 1,
        },
        {"dtype": "float32", "byteorder": "big", "vectors_b64": "", "count": 0, "dim": 0},
    ],
)
def test_bad_payloads_are_decode_errors(outputs: dict[str, object] | None) -> None:
    with pytest.raises(PayloadDecodeError):
        Embeddings.from_outputs(outputs)


def test_encode_wants_a_matrix() -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode_vectors(np.zeros(3))
