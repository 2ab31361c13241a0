"""llmc's runtime: load a bundle, schedule requests, run plans on a backend. No torch needed for cuda."""

from .engine import Completion, Engine, RequestOutput
from .sampling_params import SamplingParams

__all__ = ["Completion", "Engine", "RequestOutput", "SamplingParams"]
