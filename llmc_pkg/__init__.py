"""llmc: an ahead-of-time compiler for LLM inference."""

__version__ = "0.1.0"
