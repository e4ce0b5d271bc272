"""Sequence mixers, one per file. Each is an nn.Module with

    __init__(self, d_model: int, *, max_seq_len: int, layer_idx: int, **options)
    forward(self, x: Tensor) -> Tensor        # (batch, seq, d_model) -> same shape, strictly causal
    flops_per_token(self, seq_len: int) -> int # training FLOPs per token NOT counted by 6 * parameters

and is registered by a YAML file in conf/model/mixer/. Mixers that set `accepts_position = True` also take a
`position=` module (rope) that acts on their queries and keys.
"""
