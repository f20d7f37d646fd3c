"""Which device the embedding model runs on: CUDA when there is a GPU, the CPU otherwise.

``DSPEX_NEURAL_DEVICE`` is ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda`` (and
then a machine without a GPU is a configuration error, not a silent fall back to a CPU that
is a hundred times slower). The worker reports the answer in its heartbeat, so
``dspex-jobs health`` shows it.

The check asks NVML rather than initialising CUDA (``PYTORCH_NVML_BASED_CUDA_CHECK``): a
prefork worker's parent may check before it forks, and a parent that had initialised CUDA
would leave its children unable to use the GPU. torch is imported only when a check runs.
"""

from __future__ import annotations

import os
from typing import Literal

from dspex_jobs.errors import NeuralModelError

__all__ = ["DevicePreference", "cuda_available", "resolve_device", "worker_device"]

DevicePreference = Literal["auto", "cpu", "cuda"]
"""What ``DSPEX_NEURAL_DEVICE`` may say."""


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU, asked without initialising CUDA in this process."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(preference: DevicePreference | str) -> str:
    """The torch device to load the model on: ``"cuda"`` or ``"cpu"``.

    Raises:
        NeuralModelError: ``preference`` is ``cuda`` and there is no GPU, or it is unknown.
    """
    if preference == "cpu":
        return "cpu"
    if preference not in ("auto", "cuda"):
        raise NeuralModelError(
            f"unknown device {preference!r}: DSPEX_NEURAL_DEVICE is auto, cpu or cuda",
            device=preference,
        )
    if cuda_available():
        return "cuda"
    if preference == "cuda":
        raise NeuralModelError(
            "DSPEX_NEURAL_DEVICE=cuda, but torch sees no CUDA GPU here (no driver, no device, "
            "or a CPU-only torch build): install a CUDA torch build, or use auto or cpu",
            device=preference,
        )
    return "cpu"


def worker_device(preference: DevicePreference | str) -> str:
    """The device a neural worker will use, for its heartbeat: never raises.

    Returns:
        ``"cpu"``, ``"cuda"``, or ``"unavailable: <why>"`` (its jobs will fail with
        :class:`~dspex_jobs.errors.NeuralModelError`).
    """
    try:
        return resolve_device(preference)
    except NeuralModelError as exc:
        return f"unavailable: {exc.message}"
    except Exception as exc:  # torch missing or broken: health must still answer
        return f"unavailable: {type(exc).__name__}: {exc}"
