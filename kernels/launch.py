"""Kernel launches as data: defined in `llmc.aot.launch` (the compiler and the kernels both use it)."""

from llmc.aot.launch import (DEFAULT_CONTEXT, Launch, LaunchContext, Out, allocate_outputs,  # noqa: F401
                             current_launch_context, launch_context, pack_result, resolve, run_eager)
