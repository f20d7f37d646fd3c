"""Device choice (CUDA when present, CPU otherwise) and how health shows it."""

from __future__ import annotations

import pytest

from dspex_jobs.errors import NeuralModelError
from dspex_jobs.health import HealthReport, QueueHealth
from dspex_jobs.neural import device


def test_cpu_is_always_cpu() -> None:
    assert device.resolve_device("cpu") == "cpu"


def test_auto_takes_cuda_when_there_is_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    assert device.resolve_device("auto") == "cuda"
    assert device.resolve_device("cuda") == "cuda"


def test_without_a_gpu_auto_is_cpu_and_cuda_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert device.resolve_device("auto") == "cpu"
    with pytest.raises(NeuralModelError, match="DSPEX_NEURAL_DEVICE=cuda"):
        device.resolve_device("cuda")
    assert device.worker_device("cuda").startswith("unavailable: DSPEX_NEURAL_DEVICE=cuda")


def test_unknown_preferences_and_broken_torch_never_break_the_heartbeat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(NeuralModelError, match="auto, cpu or cuda"):
        device.resolve_device("tpu")

    def broken() -> bool:
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(device, "cuda_available", broken)
    assert device.worker_device("auto").startswith("unavailable: OSError")


def test_the_real_check_agrees_with_torch() -> None:
    import torch

    assert device.cuda_available() is torch.cuda.is_available()


def test_health_shows_each_neural_workers_device() -> None:
    queue = QueueHealth("neural", 0, ["neural-1@h", "neural-2@h"], {"neural-1@h": "cuda"})
    report = HealthReport("redis://x", True, 0.5, [queue])
    assert "neural-1@h (cuda), neural-2@h" in report.render()
    assert report.to_dict()["queues"][0]["devices"] == {"neural-1@h": "cuda"}
