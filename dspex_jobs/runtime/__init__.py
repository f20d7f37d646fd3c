"""What runs inside a worker and imports DSPy. Producers never import this package."""

from dspex_jobs.runtime.runner import Runtime

__all__ = ["Runtime"]
