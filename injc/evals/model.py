"""A LitGPT checkpoint as a scorer: per-token losses, continuation log-probabilities, greedy generation and
embedding gradients, all in eval mode, batched where it matters."""

import json
from pathlib import Path

import numpy as np
import torch

from injc.errors import InjcError

BATCH = 16


class Scorer:
    """Loads `lit_model.pth` + `model_config.yaml` from a checkpoint folder (as written by `injc train`)."""

    def __init__(self, checkpoint: str | Path, eos_id: int, device: str | None = None):
        from litgpt import Config
        from litgpt.model import GPT

        checkpoint = Path(checkpoint)
        if not (checkpoint / "lit_model.pth").is_file() or not (checkpoint / "model_config.yaml").is_file():
            raise InjcError(f"checkpoint {str(checkpoint)!r} needs lit_model.pth and model_config.yaml")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.config = Config.from_file(checkpoint / "model_config.yaml")
        self.model = GPT(self.config).to(self.device)
        state = torch.load(checkpoint / "lit_model.pth", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state.get("model", state))
        self.model.eval()
        self.eos_id = eos_id
        self.checkpoint = str(checkpoint)
        self.block = self.config.block_size
        train_state = checkpoint / "train_state.json"
        # what injc train recorded: steps done and the manifest's identity (None for other checkpoints)
        self.train_state = json.loads(train_state.read_text()) if train_state.is_file() else None
        self.steps_done = self.train_state["steps_done"] if self.train_state else None

    def _fit(self, tokens: np.ndarray) -> np.ndarray:
        """Keep the last block_size + 1 tokens (the model's context) of a sequence."""
        return tokens[-(self.block + 1):]

    @torch.no_grad()
    def token_losses(self, sequences: list[np.ndarray], scored_from: list[int]) -> list[np.ndarray]:
        """Per-token cross-entropy of sequence[i][scored_from[i]:] given everything before it (≥ 1 token)."""
        results: list[np.ndarray | None] = [None] * len(sequences)
        order = np.argsort([len(s) for s in sequences])
        for start in range(0, len(order), BATCH):
            group = order[start:start + BATCH]
            fitted = [self._fit(np.asarray(sequences[i], dtype=np.int64)) for i in group]
            width = max(len(s) for s in fitted)
            batch = torch.full((len(group), width), self.eos_id, dtype=torch.long)
            for row, seq in enumerate(fitted):
                batch[row, :len(seq)] = torch.from_numpy(seq)
            batch = batch.to(self.device)
            logits = self.model(batch[:, :-1]).float()
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").cpu()
            for row, (index, seq) in enumerate(zip(group, fitted)):
                cut = len(sequences[index]) - len(seq)
                first = max(scored_from[index] - cut, 1)
                results[index] = losses[row, first - 1:len(seq) - 1].numpy()
        return results

    def text_losses(self, texts: list[np.ndarray]) -> np.ndarray:
        """Mean per-token loss of each token sequence given one leading EOS (the generic metric)."""
        losses = self.token_losses([np.r_[self.eos_id, t] for t in texts], [1] * len(texts))
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
        from litgpt.generate.base import generate

        new_tokens = max(1, min(new_tokens, self.block - 1))  # prompt and continuation share the context
        prompt = np.asarray(prompt, dtype=np.int64)[-(self.block - new_tokens):]
        self.model.set_kv_cache(batch_size=1, max_seq_length=len(prompt) + new_tokens, device=self.device)
        try:
            out = generate(self.model, torch.from_numpy(prompt).to(self.device), len(prompt) + new_tokens,
                           temperature=0.0, eos_id=stop, include_prompt=False)
        finally:
            self.model.clear_kv_cache()
        return out.cpu().numpy()

    @torch.no_grad()
    def greedy_batch(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy continuations of equal-length prompts, [n, length] → [n, new_tokens] (batched, full recompute per
        token; no stop token). For many short windows at once, as the verbatim-candidate scan needs."""
        tokens = torch.from_numpy(np.asarray(prompts, dtype=np.int64)).to(self.device)
        for _ in range(new_tokens):
            step = self.model(tokens[:, -self.block:])[:, -1].argmax(-1, keepdim=True)
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
            logits = self.model(tokens)[:, -1].float() / temperature
            choice = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            tokens = torch.cat([tokens, choice], dim=1)
        return tokens[:, len(prompt):].cpu().numpy()

    def embedding_gradients(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean input embeddings e and ∇ₑ of each row's mean causal loss, for [n, seq_len] rows."""
        tokens = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        embeddings = self.model.transformer.wte(inputs).detach().requires_grad_(True)
        hook = self.model.transformer.wte.register_forward_hook(lambda module, args, output: embeddings)
        try:
            logits = self.model(inputs).float()
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(1)
            (gradients,) = torch.autograd.grad(losses.sum(), embeddings)
        finally:
            hook.remove()
        return embeddings.detach(), gradients
