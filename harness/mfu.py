"""Model FLOPs utilisation: achieved training FLOP/s over the device's peak (Chowdhery et al. 2022, App. B).

FLOPs per token come from the model (6 * non-embedding params + each mixer's sequence term); peak FLOP/s from the
table below (dense bf16 tensor-core figures from the vendors' datasheets), overridable with trainer.peak_flops.
"""

import torch

# Longest name first: "H100 PCIe" must match before "H100".
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of `device`, or None where unknown (CPUs, unlisted GPUs) and not overridden."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


def mfu(flops_per_token: float, tokens_per_second: float | None, peak: float | None) -> float | None:
    if not peak or not tokens_per_second:
        return None
    return flops_per_token * tokens_per_second / peak
