"""A local OpenAI-compatible LM server for tests and demos on machines with no network.

Its model, ``extractive-minilm``, is an offline stand-in for an LLM, not a language model:
it reads the input and output fields out of a DSPy adapter prompt and answers from the
inputs with the all-MiniLM-L6-v2 sentence embedding model (the most similar sentence,
that similarity, the nearest label, ...). DSPy reaches it over real HTTP::

    from dspex_jobs.lmserver import LMServerConfig, LocalLMServer

    with LocalLMServer(LMServerConfig(latency_ms=50)) as server:
        lm = dspy.LM("openai/extractive-minilm", api_base=server.url, api_key="local")

It can add latency and inject faults (429 with Retry-After, 5xx, hangs, 401) for load
and fault tests; see ``docs/lm_server.md``. Importing this package is cheap: torch and
sentence-transformers are loaded only when a server starts.
"""

from __future__ import annotations

from dspex_jobs.lmserver.cli import add_arguments, config_from_args, option_specs
from dspex_jobs.lmserver.config import (
    DEFAULT_HOST,
    DEFAULT_MODEL_NAME,
    LMServerConfig,
    LMServerStartError,
)
from dspex_jobs.lmserver.embedder import Embedder, minilm_model_path
from dspex_jobs.lmserver.process import LMServerProcess
from dspex_jobs.lmserver.server import READY_LINE_PREFIX, LocalLMServer, serve

__all__ = [
    # configuration
    "DEFAULT_HOST",
    "DEFAULT_MODEL_NAME",
    "LMServerConfig",
    # running it
    "READY_LINE_PREFIX",
    "LMServerProcess",
    "LocalLMServer",
    "serve",
    # command line
    "add_arguments",
    "config_from_args",
    "option_specs",
    # errors and seams
    "Embedder",
    "LMServerStartError",
    "minilm_model_path",
]
