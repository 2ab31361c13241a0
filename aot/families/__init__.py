"""Families as data: one description per family drives the tracer (`aot/model.py`) and ingest."""

from .description import Family, Moe
from .table import FAMILIES

__all__ = ["FAMILIES", "Family", "Moe"]
