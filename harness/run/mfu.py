"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak (Chowdhery et al. 2022, App. B).

The FLOPs a run did are counted exactly (`train_flops`): the backbone's FLOPs per token (6 * non-embedding params +
each mixer's sequence term) times the tokens trained on, plus the head's 6 * d_model * vocab times the targets scored
(the trainer runs the head only at scored positions: 4 of 64 on MQAR, every position in language modelling). MFU is
those FLOPs per second of training over the peak; peak FLOP/s from the
table below (dense bf16 tensor-core figures from the vendors' datasheets), overridable with trainer.peak_flops.
"""

import re

import torch

# Dense bf16 (fp32 accumulate) tensor FLOP/s. A device matches a key when every word of the key is a word of its
# name (torch.cuda.get_device_name, split at spaces and dashes), the key with most words first: "NVIDIA H100 PCIe"
# is "H100 PCIe", "NVIDIA A100-SXM4-80GB" is "A100", and "L40" is not "L4".
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM; also "H100 80GB HBM3"
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of `device`, or None where unknown (CPUs, unlisted GPUs) and not overridden."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    return peak_of(torch.cuda.get_device_name(device))


def peak_of(name: str) -> float | None:
    """The table's peak for a device name, or None."""
    words = set(re.split(r"[\s\-_]+", name))
    for key in sorted(PEAK_BF16_FLOPS, key=lambda k: len(k.split()), reverse=True):
        if set(key.split()) <= words:
            return PEAK_BF16_FLOPS[key]
    return None


def train_flops(
    flops_per_token: float | None, tokens: int, head_flops_per_scored: float | None, scored: int | None
) -> float | None:
    """The FLOPs of training on `tokens` tokens of which `scored` were targets: backbone per token × tokens + head per
    scored target × scored targets; None where a term is unknown."""
    if flops_per_token is None or head_flops_per_scored is None or scored is None:
        return None
    return flops_per_token * tokens + head_flops_per_scored * scored


def mfu(flops_per_token: float | None, tokens_per_second: float | None, peak: float | None) -> float | None:
    """Achieved over peak FLOP/s; None where any of the three is unknown. `flops_per_token` is what each token
    actually cost, head included: train_flops / tokens."""
    if not peak or not tokens_per_second or not flops_per_token:
        return None
    return flops_per_token * tokens_per_second / peak
