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


def cross_entropy_in_place(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy of [k, V] logits, log Σ exp(logits) − logits[target], computed in the logits' own
    memory, which it overwrites: cross_entropy would write a second [k, V] array (log_softmax), and on a CPU that
    fresh allocation costs page faults (scoring the demo's items: about 14,600 per pass with it, 500 without)."""
    target = logits.gather(1, targets[:, None])[:, 0]
    top = logits.amax(1, keepdim=True)
    return logits.sub_(top).exp_().sum(1).log_() + top[:, 0] - target


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

    def output_head(self) -> torch.nn.Module:
        return self.model.lm_head

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

    def output_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

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
        self.head_alone = self._head_alone_reproduces_logits()

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

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """The input of the model's output head, [n, T, d], from the model's own forward pass: a pre-hook takes it
        and hands the head no positions, so the [n, T, vocab] logits are never made (None: the head never ran)."""
        caught = []

        def catch(module, args):
            caught.append(args[0])
            return (args[0][..., :0, :],)

        handle = self.backend.output_head().register_forward_pre_hook(catch)
        try:
            self.backend.logits(tokens)
        finally:
            handle.remove()
        return caught[0] if len(caught) == 1 else None

    @torch.no_grad()
    def _head_alone_reproduces_logits(self) -> bool:
        """Whether the output head applied to `_hidden` gives the model's own logits (float32, 16 probe tokens). A
        model that transforms its logits after the head (Gemma's soft-capping, Granite's scaling) does not: its
        losses come from its whole logits instead."""
        head = self.backend.output_head()
        if head is None:
            return False
        vocab = self.backend.embedding().num_embeddings
        probe = (torch.arange(min(16, self.block)) * 7919 % vocab)[None].to(self.device)
        hidden = self._hidden(probe)
        if hidden is None:
            return False
        logits, alone = self.backend.logits(probe).float(), head(hidden).float()
        return alone.shape == logits.shape and bool(torch.allclose(alone, logits, rtol=1e-4,
                                                                   atol=1e-5 * float(logits.abs().max())))

    def _losses_at(self, inputs: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at the given flat positions of [n, T] inputs. The head's logits are made only there, in
        chunks of at most 2^24 logits on a CPU (64 MiB in float32: one chunk for most batches, as a fresh allocation
        per chunk costs page faults) and 2^26 on a GPU: whole [n, T, vocab] logits would cover padding too, and on a
        GPU take gigabytes (16 × 2048 × 50k float32 logits are 6.5 GB)."""
        with self._autocast():
            if self.head_alone:
                hidden, head = self._hidden(inputs).flatten(0, 1), self.backend.output_head()
                logits_at = lambda chunk: head(hidden[chunk])  # noqa: E731
            else:
                logits = self.backend.logits(inputs).flatten(0, 1)
                logits_at = lambda chunk: logits[chunk]  # noqa: E731
            vocab = self.backend.embedding().num_embeddings
            chunks = max(1, -(-len(positions) * vocab // (2 ** 26 if self.device.type == "cuda" else 2 ** 24)))
            step = max(1, -(-len(positions) // chunks))
            losses = torch.empty(len(positions), device=self.device)
            for begin in range(0, len(positions), step):
                chunk = slice(begin, begin + step)
                losses[chunk] = cross_entropy_in_place(logits_at(positions[chunk]).float(), targets[chunk])
        return losses

    @torch.no_grad()
    def token_losses(self, sequences: list[np.ndarray], scored_from: list[int]) -> list[np.ndarray]:
        """Per-token cross-entropy of sequence[i][scored_from[i]:] given everything before it (≥ 1 token).
        Sequences go through the model `batch_size` at a time, sorted by length so that padding stays small, and
        only the scored positions reach the output head. The losses land in one array allocated up front (the
        results are views of it)."""
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
            # flat positions in [rows, width - 1] predicting each scored token, in `group` order
            width = batch.shape[1] - 1
            positions = np.concatenate([row * width + np.arange(first[index] - 1, len(fitted[index]) - 1)
                                        for row, index in enumerate(group)])
            tokens = torch.from_numpy(batch).to(self.device)
            at = torch.from_numpy(positions).to(self.device)
            losses = self._losses_at(tokens[:, :-1], at, tokens[:, 1:].flatten()[at]).cpu().numpy()
            scored[np.concatenate([np.arange(ends[i] - counts[i], ends[i]) for i in group])] = losses
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
