"""Noisy in-context recall, MAD's task (Poli et al. 2024), with the semantics of MAD's
`generate_noisy_in_context_recall_instance`: in-context recall (tasks/in_context_recall.py) where each key-value
pair is, with probability frac_noise, two tokens from a separate noise vocabulary instead. MAD's baseline: vocab_size
32 of which 16 are noise tokens, frac_noise 0.2. Noise positions are never scored at test; in training, as in MAD,
every next token is a target, noise included. The shared differences from MAD are in tasks/mad_base.py.
"""

from dataclasses import dataclass

from tasks.base import Count, NonNegative, OpenFraction
from tasks.in_context_recall import InContextRecall


@dataclass
class NoisyRecall(InContextRecall):
    vocab_size: Count = 32
    noise_vocab_size: NonNegative = 16
    frac_noise: OpenFraction = 0.2
    family: str = "noisy_recall"
