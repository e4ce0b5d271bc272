"""Based (Arora et al. 2024, "Simple linear attention language models balance the recall-throughput tradeoff"):
linear attention with a 2nd-order Taylor feature map on a small projected feature dim, for global recall, plus
short sliding-window softmax attention, for precise local shifts. The two branches are summed.
"""

from typing import Annotated

from annotated_types import Ge, Gt
from torch import Tensor, nn

from models.mixers.base import Mixer
from models.mixers.linear_attention import ChunkSize, LinearAttention
from models.mixers.sliding_window import SlidingWindowAttention


class Based(Mixer):
    """Weights: each branch's own, N(0, 0.02) (Zoology's model init, zoology/model.py `_init_weights`)."""

    accepts_position = True  # rope or ALiBi act in the sliding-window branch

    def __init__(
        self,
        d_model: int,
        *,
        max_seq_len: int,
        layer_idx: int,
        n_heads: Annotated[int, Ge(1)] = 1,
        feature_dim: Annotated[int, Ge(1)] = 16,
        window: Annotated[int, Ge(1)] = 16,
        window_heads: Annotated[int, Ge(1)] = 1,
        chunk_size: ChunkSize = 64,
        eps: Annotated[float, Gt(0)] = 1e-6,
        position: nn.Module | None = None,
    ):
        super().__init__(d_model, max_seq_len=max_seq_len, layer_idx=layer_idx)
        if d_model % window_heads:
            raise ValueError(f"mixer.window_heads={window_heads} must divide d_model={d_model}")
        self.linear = LinearAttention(
            d_model,
            max_seq_len=max_seq_len,
            layer_idx=layer_idx,
            n_heads=n_heads,
            feature_map="taylor",
            feature_dim=feature_dim,
            chunk_size=chunk_size,
            eps=eps,
        )
        self.window = SlidingWindowAttention(
            d_model,
            max_seq_len=max_seq_len,
            layer_idx=layer_idx,
            window=window,
            n_heads=window_heads,
            position=position,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + self.window(x)

    def recurrent(self, x: Tensor) -> Tensor:
        """The linear branch one token at a time; the window branch is exact softmax attention either way."""
        return self.linear.recurrent(x) + self.window(x)

    def flops_per_token(self, seq_len: int) -> int:
        return self.linear.flops_per_token(seq_len) + self.window.flops_per_token(seq_len)
