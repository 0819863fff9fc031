"""A checkpoint as a scorer: per-token losses, continuation log-probabilities, greedy generation and embedding
gradients, in eval mode, many sequences per forward pass. A LitGPT checkpoint runs on LitGPT's model; a Hugging Face
folder on transformers' AutoModelForCausalLM, fed the build's token ids (the build's tokenizer is the one that
counts). The forward passes run under bf16 autocast (`precision="bf16-mixed"`, the default on CUDA) or in float32
(`"32-true"`, the default elsewhere): Lightning's names, as `injc train` uses them.
"""

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from injc.errors import InjcError
from injc.train.folders import PRECISIONS
from injc.train.hf import HF, checkpoint_format, hf_context, read_hf_config

BATCH = 16


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[n, T] per-token losses of [n, T, V] logits, over the rows laid end to end (a [n, V, T] transpose makes
    cross_entropy read the logits strided, several times slower on CPU)."""
    flat = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    return flat.view(targets.shape)


class LitGPTModel:
    """LitGPT's GPT from `lit_model.pth` + `model_config.yaml` (as `injc train` writes them)."""

    def __init__(self, folder: Path, device: torch.device):
        from litgpt import Config
        from litgpt.model import GPT

        self.config = Config.from_file(folder / "model_config.yaml")
        self.model = GPT(self.config).to(device)
        state = torch.load(folder / "lit_model.pth", map_location=device, weights_only=True)
        self.model.load_state_dict(state.get("model", state))
        self.context = self.config.block_size

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def embedding(self) -> torch.nn.Module:
        return self.model.transformer.wte

    def greedy(self, prompt: torch.Tensor, new_tokens: int, stop: int | None) -> torch.Tensor:
        from litgpt.generate.base import generate

        self.model.set_kv_cache(batch_size=1, max_seq_length=len(prompt) + new_tokens, device=prompt.device)
        try:
            return generate(self.model, prompt, len(prompt) + new_tokens, temperature=0.0, eos_id=stop,
                            include_prompt=False)
        finally:
            self.model.clear_kv_cache()


class HFModel:
    """transformers' AutoModelForCausalLM from an HF folder, in float32 (the weights' own dtype is not trusted on
    CPU; CUDA autocasts to bf16 either way)."""

    def __init__(self, folder: Path, device: torch.device):
        from transformers import AutoModelForCausalLM

        try:
            model, loading = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                                  output_loading_info=True)
        except Exception as error:  # transformers raises many types for a folder it cannot load
            raise InjcError(f"{str(folder)!r}: transformers cannot load it "
                            f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
        if loading["missing_keys"] or loading["mismatched_keys"]:  # transformers would fill them in at random
            missing = sorted(loading["missing_keys"]) + [key for key, *_ in loading["mismatched_keys"]]
            raise InjcError(f"{str(folder)!r}: transformers cannot load it (its weights do not match its "
                            f"config.json: {len(missing)} missing or misshapen, e.g. {missing[0]!r})")
        self.model = model.to(device)
        self.context = hf_context(read_hf_config(folder)) or 2 ** 31

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens, use_cache=False).logits

    def embedding(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def greedy(self, prompt: torch.Tensor, new_tokens: int, stop: int | None) -> torch.Tensor:
        """Greedy decoding with the model's own KV cache (generation_config.json, with its sampling settings, is
        deliberately not used); stops after `stop`, which is kept, as LitGPT's generate does."""
        out = self.model(input_ids=prompt[None], use_cache=True)
        generated = []
        for _ in range(new_tokens):
            token = out.logits[:, -1].argmax(-1)
            generated.append(token)
            if (stop is not None and int(token) == stop) or len(generated) == new_tokens:
                break
            out = self.model(input_ids=token[:, None], past_key_values=out.past_key_values, use_cache=True)
        return torch.cat(generated)


class Scorer:
    """Either kind of checkpoint folder, told apart by what it holds (see injc.train.hf.checkpoint_format)."""

    def __init__(self, checkpoint: str | Path, eos_id: int, device: str | None = None, batch_size: int = BATCH,
                 precision: str | None = None):
        checkpoint = Path(checkpoint)
        if precision not in (None, *PRECISIONS):
            raise InjcError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        kind = checkpoint_format(checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision or ("bf16-mixed" if self.device.type == "cuda" else "32-true")
        self.backend = (HFModel if kind == HF else LitGPTModel)(checkpoint, self.device)
        self.backend.model.eval()
        self.eos_id, self.batch_size = eos_id, batch_size
        self.checkpoint = str(checkpoint)
        self.block = self.backend.context
        train_state = checkpoint / "train_state.json"
        # what injc train recorded: steps done and the manifest's identity (None for other checkpoints)
        self.train_state = json.loads(train_state.read_text()) if train_state.is_file() else None
        self.steps_done = self.train_state["steps_done"] if self.train_state else None

    def _autocast(self):
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.backend.logits(tokens).float()

    def _fit(self, tokens: np.ndarray) -> np.ndarray:
        """Keep the last block_size + 1 tokens (the model's context) of a sequence."""
        return tokens[-(self.block + 1):]

    @torch.no_grad()
    def token_losses(self, sequences: list[np.ndarray], scored_from: list[int]) -> list[np.ndarray]:
        """Per-token cross-entropy of sequence[i][scored_from[i]:] given everything before it (≥ 1 token).
        Sequences go through the model `batch_size` at a time, sorted by length so that padding stays small. The
        losses land in one array allocated up front (the results are views of it): keeping each batch's small
        loss tensor alive fragments the heap under the next batch's large logits, which then cost page faults."""
        if not sequences:
            return []
        fitted = [self._fit(np.asarray(s, dtype=np.int64)) for s in sequences]
        first = [max(start - (len(s) - len(f)), 1) for s, f, start in zip(sequences, fitted, scored_from)]
        counts = [max(len(f) - start, 0) for f, start in zip(fitted, first)]
        ends = np.cumsum(counts)
        scored = np.empty(int(ends[-1]), dtype=np.float32)
        order = np.argsort([len(f) for f in fitted], kind="stable")
        for begin in range(0, len(order), self.batch_size):
            group = order[begin:begin + self.batch_size]
            batch = np.full((len(group), max(len(fitted[i]) for i in group)), self.eos_id, dtype=np.int64)
            for row, index in enumerate(group):
                batch[row, :len(fitted[index])] = fitted[index]
            tokens = torch.from_numpy(batch).to(self.device)
            losses = token_cross_entropy(self._logits(tokens[:, :-1]), tokens[:, 1:]).cpu().numpy()
            for row, index in enumerate(group):
                scored[ends[index] - counts[index]:ends[index]] = losses[row, first[index] - 1:len(fitted[index]) - 1]
        return np.split(scored, ends[:-1])

    def text_losses(self, texts: list[np.ndarray]) -> np.ndarray:
        """Mean per-token loss of each token sequence given one leading EOS (the generic metric)."""
        lead = np.array([self.eos_id], dtype=np.int64)
        losses = self.token_losses([np.concatenate((lead, t)) for t in texts], [1] * len(texts))
        return np.array([float(loss.mean()) if len(loss) else float("nan") for loss in losses])

    def continuation_logprobs(self, prefixes: list[np.ndarray], continuations: list[np.ndarray]) -> np.ndarray:
        """Sum of log-probabilities of each continuation given its prefix."""
        losses = self.token_losses([np.r_[p, c] for p, c in zip(prefixes, continuations)],
                                   [len(p) for p in prefixes])
        return np.array([-float(loss.sum()) for loss in losses])

    @torch.no_grad()
    def greedy(self, prompt: np.ndarray, new_tokens: int, stop: int | None = None) -> np.ndarray:
        """Greedy continuation of `prompt` (up to `new_tokens` tokens, fewer if the context is shorter; stops after
        `stop` if given). The prompt keeps its last tokens when it does not fit."""
        new_tokens = max(1, min(new_tokens, self.block - 1))  # prompt and continuation share the context
        prompt = np.asarray(prompt, dtype=np.int64)[-(self.block - new_tokens):]
        with self._autocast():
            out = self.backend.greedy(torch.from_numpy(prompt).to(self.device), new_tokens, stop)
        return out.cpu().numpy()

    @torch.no_grad()
    def greedy_batch(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy continuations of equal-length prompts, [n, length] → [n, new_tokens] (batched, full recompute per
        token; no stop token). For many short windows at once, as the verbatim-candidate scan needs."""
        tokens = torch.from_numpy(np.asarray(prompts, dtype=np.int64)).to(self.device)
        for _ in range(new_tokens):
            step = self._logits(tokens[:, -self.block:])[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, step], dim=1)
        return tokens[:, prompts.shape[1]:].cpu().numpy()

    @torch.no_grad()
    def sample(self, prompt: np.ndarray, new_tokens: int, count: int, temperature: float, seed: int) -> np.ndarray:
        """`count` sampled continuations of `prompt` as a [count, new_tokens] array (batched, full recompute per
        token; the prompt keeps its last tokens when it does not fit). Seeded: the same call gives the same tokens."""
        new_tokens = max(1, min(new_tokens, self.block - 1))
        prompt = np.asarray(prompt, dtype=np.int64)[-(self.block - new_tokens):]
        tokens = torch.from_numpy(prompt).to(self.device).repeat(count, 1)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        for _ in range(new_tokens):
            logits = self._logits(tokens)[:, -1] / temperature
            choice = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            tokens = torch.cat([tokens, choice], dim=1)
        return tokens[:, len(prompt):].cpu().numpy()

    def embedding_gradients(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean input embeddings e and ∇ₑ of each row's mean causal loss, for [n, seq_len] rows."""
        tokens = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        embedding = self.backend.embedding()
        embeddings = embedding(inputs).detach().float().requires_grad_(True)
        hook = embedding.register_forward_hook(lambda module, args, output: embeddings.to(output.dtype))
        try:
            logits = self._logits(inputs)
            losses = token_cross_entropy(logits, targets).mean(1)
            (gradients,) = torch.autograd.grad(losses.sum(), embeddings)
        finally:
            hook.remove()
        return embeddings.detach(), gradients
