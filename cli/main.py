"""The `llmc` command: a click group whose commands parse, call the library, and print.

A `UserError` (bad input the user can fix) prints as one line and exits with code 2.
"""

from __future__ import annotations

import sys

import click

from llmc import __version__
from llmc.errors import UserError

from .bench import bench
from .build import build
from .cache import cache
from .inspect import inspect
from .pack import pack
from .run import run
from .serve import serve
from .sign import sign
from .verify import verify


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)  # torch.fx appends lines
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="llmc")
def main() -> None:
    """llmc: compile Hugging Face LLMs ahead of time into self-contained bundles, and run them."""


for command in (build, run, inspect, verify, pack, cache, serve, bench, sign):
    main.add_command(command)
