"""ModelSpec: everything about a checkpoint that the compiler needs, read once by ingest.

The fields after `checkpoint_dtype` are the per-family features (see `aot/families/`); their
defaults are the Llama-shaped block.
"""

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    hidden_size: int
    num_layers: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope_theta: float
    rope_scaling: dict = field(default_factory=dict)
    sliding_windows: tuple[int, ...] = ()  # per layer; 0 = full attention
    qk_norm: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    checkpoint_dtype: str = "float32"
    local_rope: dict = field(default_factory=dict)  # sliding layers' rope_theta (+ scaling) when it differs
    rotary_dim: int = 0  # leading dims of each head that rotate; 0 = all of head_dim
    activation: str = "silu"  # of the gated MLP: silu | gelu_tanh
    attention_scale: float = 0.0  # 0: head_dim ** -0.5
    attn_soft_cap: float = 0.0  # 0: none; else scores -> cap * tanh(scores / cap)
    final_soft_cap: float = 0.0
    embed_scale: float = 0.0  # 0: none; else embeddings are multiplied by it (in the model's dtype)
    sandwich_norms: bool = False  # norms after attention and after the MLP too (Gemma 2/3)
    moe_layers: tuple[bool, ...] = ()  # per layer: MoE (True) or gated dense MLP; () = all dense
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True

    def __post_init__(self):
        if self.num_q_heads % self.num_kv_heads:
            raise ValueError(f"{self.num_q_heads} query heads do not divide into {self.num_kv_heads} KV heads")
        if len(self.sliding_windows) != self.num_layers:
            raise ValueError("sliding_windows needs one entry per layer")
        if self.moe_layers and len(self.moe_layers) != self.num_layers:
            raise ValueError("moe_layers needs one entry per layer")

    @property
    def q_size(self) -> int:
        return self.num_q_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def is_moe(self, layer: int) -> bool:
        return bool(self.moe_layers) and self.moe_layers[layer]

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("sliding_windows", "eos_token_ids", "moe_layers"):
            d[key] = list(d[key])
        return d
