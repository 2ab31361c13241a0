"""`llmc serve BUNDLE`: the OpenAI-compatible HTTP server."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

SERVE_EXTRA_MISSING = "llmc serve needs the serve extra: pip install 'llmc[serve]'"
DEFAULT_MAX_WAITING = 256  # as llmc.runtime.server.app, which cannot be imported before the check


@click.command("serve")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--device", type=click.Choice(["auto", "cuda", "hip", "cpu"]), default="auto", show_default=True,
              help="Where to run; auto: the backend the bundle was built for.")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=None,
              help="Most sequences decoded together (default: the bundle's largest batch).")
@click.option("--max-waiting", type=click.IntRange(min=1), default=DEFAULT_MAX_WAITING, show_default=True,
              help="Requests that may queue for a place in the batch; past that, HTTP 503.")
@click.option("--chat-template", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A Jinja chat template file to use instead of the bundle's.")
@click.option("--served-model-name", default=None, help="The model name clients send (default: the bundle's).")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds running requests get to finish after SIGTERM.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@click.option("--gpu-memory-utilization", type=float, default=0.9, show_default=True,
              help="cuda: share of the free GPU memory the KV cache may take.")
@click.option("--verify", type=click.Choice(["full", "fast", "none"]), default="full", show_default=True,
              help="full hashes every file at start; fast checks the manifest and sizes.")
@click.option("--no-overlap", is_flag=True, help="Prepare each step only after the previous one ends (same output).")
@click.option("--no-prefix-caching", is_flag=True, help="Compute every prompt in full: no KV blocks shared by content.")
@click.option("--api-key", envvar="LLMC_API_KEY", show_envvar=True, default=None,
              help="Requests to /v1/* must send `Authorization: Bearer KEY` (401 otherwise).")
def serve(bundle: Path, host: str, port: int, device: str, max_num_seqs: int | None, max_waiting: int,
          chat_template: Path | None, served_model_name: str | None, shutdown_timeout: float,
          log_level: str, gpu_memory_utilization: float, verify: str, no_overlap: bool,
          no_prefix_caching: bool, api_key: str | None) -> None:
    """Serve BUNDLE with OpenAI's HTTP API.

    Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id},
    POST /tokenize, POST /detokenize, GET /version, GET /health, GET /metrics (Prometheus).
    SIGTERM stops accepting requests, lets running ones finish (at most --shutdown-timeout
    seconds) and exits 0.
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        click.echo(SERVE_EXTRA_MISSING, err=True)
        raise click.exceptions.Exit(2) from None
    from llmc.runtime import Engine
    from llmc.runtime.server import create_app

    options = {"gpu_memory_utilization": gpu_memory_utilization} if device != "cpu" else {}
    engine = Engine.load(bundle, device=device, max_num_seqs=max_num_seqs, verify=verify, overlap=not no_overlap,
                         enable_prefix_caching=not no_prefix_caching, **options)
    if max_num_seqs is not None and engine.max_num_seqs < max_num_seqs:
        click.echo(f"warning: --max-num-seqs {max_num_seqs} is above the bundle's largest decode batch; serving at most "
                   f"{engine.max_num_seqs} sequences together (rebuild with --max-batch-size {max_num_seqs} for more)", err=True)
    template = chat_template.read_text() if chat_template else None
    app = create_app(engine, model_name=served_model_name, max_waiting=max_waiting, chat_template=template,
                     api_key=api_key)
    _log_to_stderr(log_level)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=shutdown_timeout)
    server = uvicorn.Server(config)

    # uvicorn restores these handlers when it has shut down and then raises the signal again;
    # a handler of ours (not the default one) turns a graceful SIGTERM into exit status 0.
    def stop(signum, frame):
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        server.run()
    finally:
        engine.close()
    if not server.started:
        raise click.exceptions.Exit(1)


def _log_to_stderr(level: str) -> None:
    """llmc's own log lines (the start-up line, engine errors) beside uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logger = logging.getLogger("llmc")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
