"""llmc's IR: ops registered on plain torch functions, impls per provider, lowering per target."""

from .op import OPS, Impl, IrOp, SchemaMismatch, op_of, register_op
from . import ops  # noqa: F401  (registers every op)

__all__ = ["OPS", "Impl", "IrOp", "SchemaMismatch", "op_of", "register_op"]
