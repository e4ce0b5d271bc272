"""The language model: token embedding -> position -> N blocks -> final norm; `head` maps hidden states to logits.

`forward` returns hidden states, not logits: the trainer applies `head` only at scored positions, which on the
synthetic tasks is most of the saving (MQAR scores 4 of 64 positions; an 8,192-way head at all 64 dominates a step).
The parts arrive as factories (Hydra `_partial_: true`) and are called with the dimensions the backbone owns.
Each part initialises its own parameters as its reference does (docs/init_and_decay.md); the backbone initialises
only what it creates, the token embedding and the head, N(0, init_std) as GPT-2.
"""

from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Lt
from torch import Tensor, nn

from models.canon import Canon

PLACEMENTS = ("pre", "post", "sandwich")
Probability = Annotated[float, Ge(0), Lt(1)]


def _dropout(p: float) -> nn.Module:
    """nn.Dropout(p), or nothing at p = 0 (so the default costs no time and draws no random numbers)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class Block(nn.Module):
    """pre: x + f(norm(x)); post: norm(x + f(x)) (Vaswani et al.); sandwich: x + norm(f(norm(x))) (Ding et al. 2021)."""

    def __init__(
        self,
        d_model: int,
        mixer: nn.Module,
        ffn: nn.Module | None,
        norm: Callable,
        placement: str,
        dropout: float = 0.0,
        canon: int = 0,
    ):
        super().__init__()
        self.placement = placement
        self.dropout = _dropout(dropout)  # on each sublayer's output, before it joins the residual (Zoology's resid)
        self.mixer, self.ffn = mixer, ffn
        self.canon = Canon(d_model, canon) if canon else None  # Canon-A: on the mixer's input (models/canon.py)
        n_sublayers = 1 if ffn is None else 2
        self.norms = nn.ModuleList(norm(d_model) for _ in range(n_sublayers))
        self.post_norms = nn.ModuleList(norm(d_model) for _ in range(n_sublayers if placement == "sandwich" else 0))

    def forward(self, x: Tensor) -> Tensor:
        mixer = self.mixer if self.canon is None else lambda h: self.mixer(self.canon(h))
        for i, f in enumerate([mixer] if self.ffn is None else [mixer, self.ffn]):
            if self.placement == "post":
                x = self.norms[i](x + self.dropout(f(x)))
            elif self.placement == "sandwich":
                x = x + self.dropout(self.post_norms[i](f(self.norms[i](x))))
            else:
                x = x + self.dropout(f(self.norms[i](x)))
        return x


class LanguageModel(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: Annotated[int, Ge(1)],
        d_model: Annotated[int, Ge(1)],
        n_layers: Annotated[int, Ge(1)],
        max_seq_len: Annotated[int, Ge(1)],
        mixer: Callable | Sequence[Callable],
        norm: Callable,
        ffn: Callable,
        position: Callable,
        norm_placement: Literal["pre", "post", "sandwich"] = "pre",
        tie_embeddings: bool = False,
        init_std: Annotated[float, Gt(0)] = 0.02,
        pattern: Sequence[str] | None = None,
        attention_every: Annotated[int, Ge(1)] | None = None,
        attention_offset: Annotated[int, Ge(0)] | None = None,
        attention_mixer: object = None,
        dropout_embedding: Probability = 0.0,
        dropout_residual: Probability = 0.0,
        canon: Annotated[int, Ge(0)] = 0,
    ):
        super().__init__()
        if pattern is not None:  # names of config options: the harness turns them into `mixer` factories
            raise ValueError(f"pattern={list(pattern)} is resolved by harness.run.build.build_model, not by the model")
        plan = {"attention_every": attention_every, "attention_offset": attention_offset}
        plan = {k: v for k, v in {**plan, "attention_mixer": attention_mixer}.items() if v is not None}
        if plan:  # a layer plan, as pattern: harness.run.build.layer_plan
            given = ", ".join(f"{k}={v}" for k, v in plan.items())
            raise ValueError(f"{given}: resolved by harness.run.build.build_model, not by the model")
        mixers = list(mixer) if isinstance(mixer, Sequence) else [mixer]
        self.d_model, self.max_seq_len, self.vocab_size = d_model, max_seq_len, vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.position = position(d_model, max_seq_len=max_seq_len)
        in_attention = getattr(self.position, "kind", None) == "attention"
        blocks = []
        for i in range(n_layers):
            make = mixers[i % len(mixers)]  # a hybrid's pattern repeats over depth
            kwargs = {"position": self.position} if in_attention and _accepts_position(make) else {}
            blocks.append(
                Block(
                    d_model,
                    make(d_model, max_seq_len=max_seq_len, layer_idx=i, **kwargs),
                    ffn(d_model),
                    norm,
                    norm_placement,
                    dropout_residual,
                    canon,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        firsts: dict[type, nn.Module] = {}
        for block in self.blocks:  # a value residual (RWKV-7's v_first): layers of a kind read the first one's values
            if hasattr(block.mixer, "use_first_layer"):
                block.mixer.use_first_layer(firsts.setdefault(type(block.mixer), block.mixer))
        self.embedding_dropout = _dropout(dropout_embedding)  # after token + position embedding (Zoology's embed)
        if in_attention and not any(_accepts_position(m) for m in mixers):
            raise ValueError(f"{type(self.position).__name__} acts inside attention, but no mixer takes positions")
        self.final_norm = nn.Identity() if norm_placement == "post" else norm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        for own in (self.embedding, self.head):  # the parts (mixers, ffns, norms, positions) initialised themselves
            torch.nn.init.normal_(own.weight, mean=0.0, std=init_std)
        if tie_embeddings:
            self.head.weight = self.embedding.weight

    def forward(self, idx: Tensor) -> Tensor:
        """idx: (batch, seq) token ids -> hidden states (batch, seq, d_model). Apply `self.head` for logits."""
        if idx.shape[1] > self.max_seq_len:
            raise ValueError(f"sequence length {idx.shape[1]} exceeds max_seq_len={self.max_seq_len}")
        x = self.embedding(idx)
        if getattr(self.position, "kind", None) == "embedding":
            x = self.position(x)
        x = self.embedding_dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def num_params(self, non_embedding: bool = False) -> int:
        """Every parameter (tied weights once); `non_embedding`: without the vocabulary and position matrices (token
        embedding, output head, tied or not, and a learned position table), as Kaplan et al. 2020 count N."""
        params = {id(p): p for p in self.parameters()}  # count tied weights once
        if non_embedding:
            for p in self._embedding_parameters():
                params.pop(id(p), None)
        return sum(p.numel() for p in params.values())

    def num_embedding_params(self) -> int:
        """The vocabulary and position matrices that `num_params(non_embedding=True)` leaves out (tied once)."""
        return sum(p.numel() for p in {id(p): p for p in self._embedding_parameters()}.values())

    def _embedding_parameters(self) -> list[nn.Parameter]:
        embeddings = [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]  # tokens, learned positions
        return [*embeddings, self.head.weight]

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token of the backbone: 6 * non-embedding parameters (Kaplan et al. 2020) plus each
        mixer's own sequence term (for softmax attention PaLM's 12 * H * Q * T per layer). The head is not in it: the
        trainer runs it only at scored positions, `head_flops_per_scored` each."""
        extra = sum(b.mixer.flops_per_token(seq_len) for b in self.blocks)  # every mixer states its own
        return 6 * self.num_params(non_embedding=True) + extra

    def head_flops_per_scored(self) -> int:
        """Training FLOPs of the output head per scored position: 2 * d_model * vocab forward, twice that backward."""
        return 6 * self.head.in_features * self.head.out_features


def _accepts_position(factory: Callable) -> bool:
    return getattr(getattr(factory, "func", factory), "accepts_position", False)
