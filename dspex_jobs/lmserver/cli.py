"""Command-line options of the LM server, generated from :class:`LMServerConfig`.

Every config field ``some_field`` becomes ``--some-field`` with the field's type, default
and help text, so the flags, the dataclass and ``LMServerConfig.to_argv()`` always agree.
``python -m dspex_jobs.lmserver`` uses :func:`main`; another CLI can reuse
:func:`add_arguments` / :func:`config_from_namespace` or :func:`option_specs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from dspex_jobs.errors import ConfigurationError
from dspex_jobs.lmserver.config import LMServerConfig
from dspex_jobs.lmserver.server import serve

__all__ = [
    "OptionSpec",
    "add_arguments",
    "config_from_args",
    "config_from_namespace",
    "main",
    "option_specs",
]

EXIT_OK = 0
"""The server ran and was stopped by a signal."""

EXIT_USAGE = 2
"""Bad options (argparse's own usage-error status)."""

EXIT_START_FAILED = 3
"""The server could not start (model missing, port taken, ...)."""

_CONVERTERS: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float}


class OptionSpec(NamedTuple):
    """One command-line option: flag, config field, value type, default and help."""

    flag: str
    field: str
    type: Callable[[str], Any]
    optional: bool
    default: Any
    help: str


def option_specs() -> list[OptionSpec]:
    """The options, one per :class:`LMServerConfig` field, in field order."""
    specs = []
    for f in dataclasses.fields(LMServerConfig):
        type_text = str(f.type)
        optional = type_text.endswith("| None")
        base = type_text.removesuffix("| None").strip()
        specs.append(
            OptionSpec(
                "--" + f.name.replace("_", "-"),
                f.name,
                _CONVERTERS[base],
                optional,
                f.default,
                str(f.metadata.get("help", "")),
            )
        )
    return specs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per :class:`LMServerConfig` field to ``parser``."""
    for spec in option_specs():
        default = "unset" if spec.default is None else spec.default
        parser.add_argument(
            spec.flag,
            dest=spec.field,
            type=spec.type,
            default=spec.default,
            metavar=spec.field.rsplit("_", 1)[-1].upper()
            if spec.field.endswith(("_ms", "_s"))
            else None,
            help=f"{spec.help} (default: {default})",
        )


def config_from_namespace(namespace: argparse.Namespace) -> LMServerConfig:
    """Build the config from parsed arguments (other attributes are ignored)."""
    names = {f.name for f in dataclasses.fields(LMServerConfig)}
    return LMServerConfig(**{k: v for k, v in vars(namespace).items() if k in names})


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m dspex_jobs.lmserver``."""
    parser = argparse.ArgumentParser(
        prog="python -m dspex_jobs.lmserver",
        description="Local OpenAI-compatible LM server (model extractive-minilm: extractive "
        "answers by all-MiniLM-L6-v2 similarity; not a language model).",
        epilog="example: python -m dspex_jobs.lmserver --port 8765 --latency-ms 100 "
        "--rate-limit-rate 0.1 --seed 7",
    )
    add_arguments(parser)
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="Logging level of the server's stderr log (default: WARNING).",
    )
    parser.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="Stop when stdin closes (a parent process that dies takes the server with it).",
    )
    return parser


def config_from_args(argv: list[str] | None = None) -> LMServerConfig:
    """Parse command-line arguments into a config (``sys.argv[1:]`` when None).

    Raises:
        SystemExit: The arguments do not parse or a value is out of range (status 2).
    """
    parser = build_parser()
    namespace = parser.parse_args(argv)
    try:
        return config_from_namespace(namespace)
    except ConfigurationError as exc:
        parser.error(exc.message)
        raise  # unreachable: parser.error exits


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM; returns the process exit status."""
    config = config_from_args(argv)
    extra = build_parser().parse_args(argv)
    logging.basicConfig(
        level=str(extra.log_level).upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()
    if extra.stop_on_stdin_eof:
        threading.Thread(
            target=_stop_at_eof, args=(stop,), daemon=True, name="lm-server-stdin"
        ).start()
    try:
        serve(config, stop_event=stop)
    except (ConfigurationError, OSError) as exc:
        print(f"dspex-jobs lm-server: could not start: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    return EXIT_OK


def _stop_at_eof(stop: threading.Event) -> None:
    """Read stdin until it closes, then ask the server to stop."""
    # os.read on the raw descriptor: a daemon thread blocked in sys.stdin's buffered
    # reader holds its lock and aborts the interpreter at exit.
    try:
        while os.read(0, 4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()
