"""A saved archbench language model on EleutherAI's lm-evaluation-harness (`pip install 'archbench[lmeval]'`).

    archbench-lmeval --model_args run=results/default/2026-12-07_17-10-50 --tasks lambada_openai,hellaswag
    archbench-lmeval --model_args run=RUN --batch_size 32 --tasks my_task --include_path my_tasks/   # local YAML tasks

`archbench-lmeval` (harness/run/lmeval_cli.py) is lm-eval's own command line (`lm_eval --help`: every flag) with
the model `archbench` registered and chosen (`--model archbench` is implied). From Python, `import harness.run.lmeval`
registers it for `lm_eval.simple_evaluate(model="archbench", model_args="run=RUN", ...)`, or pass
`ArchbenchLM(run=RUN)` as the model.

The run (its folder, holding result.json and model.safetensors) is loaded as `archbench-eval` loads it
(harness/run/evaluate.py): the model built from the record's config, the final weights read; the tokenizer is the
run's task's: UTF-8 bytes, the BPE trained by the prepare step (tokenizer.json in its shards folder) or the
tokenizer.json / hub tokenizer it names. archbench's tokenizers have no special tokens: the newline token stands for
end of text (lm-eval's prefix token for an empty context and for rolling windows), as documents are joined with
newlines in training. Requests longer than the model's max_seq_len (its training length) keep their last tokens.

- loglikelihood: sum over the continuation's tokens of log-softmax(head(model(context + continuation))), and
  whether each of those tokens was the argmax (lm-eval's is_greedy); fp32, batched with right padding (every
  mixer is causal, so padding after a sequence changes nothing before it).
- loglikelihood_rolling: the text's total log-likelihood over disjoint windows of max_seq_len tokens
  (lm-eval's get_rolling_token_windows), the first conditioned on the newline token.
- generate_until: greedy decoding, one token at a time over the whole (truncated) context, up to max_gen_toks
  (default 256) tokens or the first `until` string, which is cut off. Sampling (do_sample, temperature > 0) is refused.
"""

import logging

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from harness.run.build import ConfigError
from harness.run.evaluate import load_saved
from harness.run.train import resolve_device
from tasks import lm_tokenizer

DEFAULT_GEN_TOKS = 256
logger = logging.getLogger(__name__)


class TextCodec:
    """A task's tokenizer as lm-eval needs it: text to ids and back; UTF-8 bytes when `tok` is None."""

    def __init__(self, tok: object | None) -> None:
        self.tok = tok

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8")) if self.tok is None else self.tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace") if self.tok is None else self.tok.decode(ids)


def task_codec(task: object) -> TextCodec:
    """The codec of a run's lm_text task: bytes, the prepared BPE (tokenizer.json beside the shards), or a file/hub
    tokenizer; ConfigError naming task.tokenizer when it cannot be had here."""
    spec = getattr(task, "tokenizer", None)
    if spec is None:
        raise ConfigError(f"the run's task ({type(task).__name__}) is not lm_text: it has no text tokenizer")
    if spec == lm_tokenizer.BYTE:
        return TextCodec(None)
    path = str(task.shards_folder() / "tokenizer.json") if spec == lm_tokenizer.BPE else spec
    try:
        return TextCodec(lm_tokenizer.load(path))
    except ValueError as e:
        raise ConfigError(f"task.{e}") from None


def pick_device(device: str | None) -> torch.device:
    """The device asked for; lm-eval's command line asks for cuda by default, so on a machine without CUDA the CPU,
    with a warning (as lm-eval's own `hf` model does). None or auto: CUDA if available, else the CPU."""
    if device in (None, "", "auto"):
        return resolve_device("auto")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        logger.warning(
            "archbench-lmeval: device=%s asked for, but CUDA is not available here: evaluating on the CPU", device
        )
        return torch.device("cpu")
    return torch.device(device)


@register_model("archbench")
class ArchbenchLM(TemplateLM):
    """lm-eval's model `archbench`: a saved archbench run (`run=` its folder), evaluated on the CPU or `device=`."""

    def __init__(self, run: str, batch_size: int | str = 16, device: str | None = None, **_ignored: object) -> None:
        super().__init__()
        saved = load_saved(str(run))
        self.task, self.model = saved.task, saved.model
        self.codec = task_codec(self.task)
        self._device = pick_device(device)
        self.model.to(self._device).eval()
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto" is lm-eval's: a fixed size here
        self.max_length = int(self.model.max_seq_len)
        self._eot = self.codec.encode("\n")[0]

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def tokenizer_name(self) -> str:
        return str(self.task.tokenizer)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: object) -> list[int]:
        return self.codec.encode(string)

    def tok_decode(self, tokens: list[int], **kwargs: object) -> str:
        return self.codec.decode(tokens)

    @torch.no_grad()
    def log_probs(self, inputs: list[list[int]]) -> list[torch.Tensor]:
        """Each input's (len, vocab) log-softmax of the next token, one right-padded batch, fp32."""
        width = max(len(x) for x in inputs)
        batch = torch.zeros(len(inputs), width, dtype=torch.long)
        for i, x in enumerate(inputs):
            batch[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        logits = self.model.head(self.model(batch.to(self._device))).float()
        out = F.log_softmax(logits, dim=-1).cpu()
        return [out[i, : len(x)] for i, x in enumerate(inputs)]

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]], disable_tqdm: bool = False, **kw
    ) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        for start in tqdm(range(0, len(order), self.batch_size), disable=disable_tqdm, desc="archbench loglikelihood"):
            idx = order[start : start + self.batch_size]
            inputs, conts = [], []
            for i in idx:
                _, context, continuation = requests[i]
                if not continuation:
                    raise ValueError("loglikelihood: a continuation that encodes to no token cannot be scored")
                whole = (context + continuation)[-(self.max_length + 1) :]
                inputs.append(whole[:-1])
                conts.append(continuation[-len(whole) + 1 :] if len(continuation) >= len(whole) else continuation)
            for i, lp, cont in zip(idx, self.log_probs(inputs), conts, strict=True):
                scored = lp[-len(cont) :]
                target = torch.as_tensor(cont, dtype=torch.long)
                logprob = float(scored.gather(1, target[:, None]).sum())
                greedy = bool((scored.argmax(-1) == target).all())
                results[i] = (logprob, greedy)
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="archbench loglikelihood_rolling"):
            (text,) = req.args
            windows = [
                (None, *make_disjoint_window(w))
                for w in get_rolling_token_windows(self.tok_encode(text), self._eot, self.max_length, 1)
            ]
            total = sum(lp for lp, _ in self._loglikelihood_tokens(windows, disable_tqdm=True))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    @torch.no_grad()
    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="archbench generate_until"):
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            if kwargs.get("do_sample") or float(kwargs.get("temperature", 0.0) or 0.0) > 0:
                raise ValueError(f"generate_until: archbench decodes greedily only, not with {kwargs}")
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            text = self.greedy(self.tok_encode(context), int(kwargs.get("max_gen_toks", DEFAULT_GEN_TOKS)), until)
            self.cache_hook.add_partial("generate_until", (context, req.args[1]), text)
            out.append(text)
        return out

    def greedy(self, ids: list[int], max_new: int, until: list[str]) -> str:
        """Up to max_new argmax tokens after ids, stopping at (and cutting) the first `until` string."""
        ids = ids or [self._eot]
        new: list[int] = []
        text = ""
        for _ in range(max_new):
            window = (ids + new)[-self.max_length :]
            logits = self.model.head(self.model(torch.as_tensor([window], device=self._device))[:, -1])
            new.append(int(logits.argmax(-1)))
            text = self.tok_decode(new)
            if any(stop in text for stop in until):
                break
        cuts = [text.index(stop) for stop in until if stop in text]
        return text[: min(cuts)] if cuts else text
