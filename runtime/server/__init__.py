"""`llmc serve`: an OpenAI-compatible HTTP server over the engine (needs the `serve` extra)."""

from .app import create_app

__all__ = ["create_app"]
