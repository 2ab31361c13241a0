"""What the server says about itself: the start-up line, the model card, the version."""

from llmc import __version__


def startup_line(engine, served: str) -> str:
    """Model, target, device, context, KV cache and buckets, as one log line."""
    manifest = engine.bundle.manifest
    build, target = manifest["build"], manifest["target"]
    blocks = engine.stats()["kv_blocks_total"]
    return (f"serving {served} ({manifest['model']['architecture']}, {build['dtype']}) built for {target['name']} "
            f"on {engine.device_name}: context {engine.max_model_len} tokens, {blocks} KV blocks of "
            f"{manifest['kv_cache']['block_size']} tokens, up to {engine.max_num_seqs} sequences; "
            f"buckets decode {build['decode_buckets']}, prefill {build['prefill_buckets']}")


def model_card(served: str, created: int, max_model_len: int) -> dict:
    return {"id": served, "object": "model", "created": created, "owned_by": "llmc", "root": served,
            "parent": None, "max_model_len": max_model_len}


def version() -> dict:
    return {"version": __version__}
