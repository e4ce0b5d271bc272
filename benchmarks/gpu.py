"""GPU fast path: archbench's trainer against a bare nanoGPT-style loop on the same GPT-2-small model and data,
in one invocation; prints tokens/s, MFU and their ratio. Then Zoology's MQAR model (d_model 64, 2 layers, length 64,
vocab 8,192, batch 512, one head) in steps/s: eager, compiled, and compiled with CUDA graphs (reduce-overhead), so
users know what a small sweep costs.

    python benchmarks/gpu.py                 # on a CUDA machine (goal: MFU >= 50% on an H100, ratio >= 1.0)
    python benchmarks/gpu.py --tiny          # a CPU-sized smoke run of the same code paths

Both loops are timed over all their steps after `--warmup` untimed steps (compilation happens there).
benchmarks/gpu_check.py runs these measurements, and the rest of the GPU check, under time budgets (docs/gpu.md).
"""

import argparse
import contextlib
import functools
import time

import torch
import torch.nn.functional as F

from harness.run.mfu import mfu, peak_flops
from harness.run.train import TrainConfig, configure_optimizer, seed_everything, train
from models import ffn, norms, positions
from models.backbone import LanguageModel
from models.mixers.attention import Attention
from tasks.base import Split

# GPT-2 small (nanoGPT's, vocab padded to 50,304) and Zoology's MQAR model; the tiny sizes run the same code on a CPU.
GPT2 = dict(vocab=50304, d=768, layers=12, heads=12, seq=1024, batch=16)
GPT2_TINY = dict(vocab=512, d=64, layers=2, heads=2, seq=64, batch=8)
MQAR_SIZES = dict(vocab=8192, seq=64, batch=512)
MQAR_TINY = dict(vocab=512, seq=64, batch=32)


def gpt(vocab: int, d: int, layers: int, heads: int, seq: int) -> LanguageModel:
    return LanguageModel(
        vocab_size=vocab,
        d_model=d,
        n_layers=layers,
        max_seq_len=seq,
        mixer=functools.partial(Attention, n_heads=heads),
        norm=norms.layernorm,
        ffn=functools.partial(ffn.MLP, activation="gelu"),
        position=functools.partial(positions.LearnedPosition),
    )


def lm_data(n: int, seq: int, vocab: int) -> Split:
    tokens = torch.randint(0, vocab, (n, seq + 1), generator=torch.Generator().manual_seed(0))
    return Split(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())


def bare_loop(model, data: Split, steps: int, warmup: int, batch: int, device, compile_model: bool) -> float:
    """nanoGPT's train.py loop, reduced to its hot path: bf16 autocast, fused AdamW, clipping, full-sequence loss."""
    model.to(device)
    opt = configure_optimizer(model, TrainConfig(lr=6e-4), device)
    step_model = torch.compile(model) if compile_model else model
    x_all, y_all = data.inputs.to(device), data.targets.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    g = torch.Generator(device=device).manual_seed(0)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        idx = torch.randint(0, len(x_all), (batch,), device=device, generator=g)
        with autocast:
            logits = model.head(step_model(x_all[idx]))
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y_all[idx].view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch * x_all.shape[1] / (time.perf_counter() - t0)


def archbench_loop(
    model, data: Split, steps: int, warmup: int, batch: int, device, compile_model: bool, mode: str | None = None
) -> float:
    settings = dict(
        batch_size=batch,
        lr=6e-4,
        eval_every=10**9,
        eval_batch_size=batch,
        progress=False,
        compile=compile_model,
        compile_mode=mode,
        device=str(device),
        warmup_steps=10,
    )
    small = Split(data.inputs[:batch], data.targets[:batch])
    if warmup:  # compile and allocator warm-up, not timed (as in the bare loop)
        train(model, {"train": data, "val": small, "test": small}, TrainConfig(max_steps=warmup, **settings), seed=0)
    out = train(model, {"train": data, "val": small, "test": small}, TrainConfig(max_steps=steps, **settings), seed=0)
    return out["cost"]["tokens_per_second"]


def mqar_model(vocab: int, seq: int) -> LanguageModel:
    """Zoology's MQAR model: width 64, 2 layers, one attention head, no MLP, learned positions."""
    return LanguageModel(
        vocab_size=vocab,
        d_model=64,
        n_layers=2,
        max_seq_len=seq,
        mixer=functools.partial(Attention, n_heads=1),
        norm=norms.layernorm,
        ffn=ffn.none,
        position=functools.partial(positions.LearnedPosition),
    )


def mqar_split(vocab: int, seq: int, batch: int) -> Split:
    from tasks.mqar import MQAR

    return MQAR(
        vocab_size=vocab, seq_len=seq, num_kv_pairs=4, num_train=batch * 4, num_val=batch, num_test=batch
    ).split("train", 0)


def mqar_steps_per_second(
    vocab: int, seq: int, batch: int, steps: int, warmup: int, device, compiled: bool, mode: str | None
) -> float:
    seed_everything(0)
    tps = archbench_loop(
        mqar_model(vocab, seq), mqar_split(vocab, seq, batch), steps, warmup, batch, device, compiled, mode
    )
    return tps / (batch * seq)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true", help="CPU-sized model and steps, to check the code paths")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compile_model = args.compile if args.compile is not None else device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    vocab, d, layers, heads, seq, batch = (GPT2_TINY if args.tiny else GPT2).values()
    steps, warmup = (args.steps, args.warmup) if not args.tiny else (5, 1)
    data = lm_data(batch * 8, seq, vocab)
    results = {}
    for name, loop in (("bare nanoGPT-style", bare_loop), ("archbench trainer", archbench_loop)):
        seed_everything(0)
        model = gpt(vocab, d, layers, heads, seq)
        results[name] = loop(model, data, steps, warmup, batch, device, compile_model)
    fpt = model.flops_per_token(seq) + model.head_flops_per_scored()  # language modelling scores every position
    peak = peak_flops(device)
    print(
        f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}; "
        f"compile={compile_model}; model {layers}x{d}, seq {seq}, batch {batch}, vocab {vocab}"
    )
    for name, tps in results.items():
        m = mfu(fpt, tps, peak)
        print(f"{name:<20} {tps:>12,.0f} tokens/s   MFU {'n/a' if m is None else f'{m:.1%}'}")
    print(f"ratio archbench / bare: {results['archbench trainer'] / results['bare nanoGPT-style']:.3f}")

    # Zoology's MQAR model (one head, no MLP, learned positions): what a small sweep costs per step.
    modes = [(False, None), (True, None), (True, "reduce-overhead")] if device.type == "cuda" else [(False, None)]
    v, L, b = (MQAR_TINY if args.tiny else MQAR_SIZES).values()
    for compiled, mode in modes:
        sps = mqar_steps_per_second(v, L, b, steps, warmup, device, compiled, mode)
        print(f"MQAR d64 2 layers L{L} V{v} batch {b} compile={compiled} mode={mode}: {sps:,.1f} steps/s")


if __name__ == "__main__":
    main()
