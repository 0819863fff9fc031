"""What every family eval gets: the manifest, the checkpoint's scorer, the tokenizer and the recorded payloads."""

import json
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from injc.evals.model import Scorer
from injc.shards.insertions import read_items, without_eos_wrappers
from injc.shards.manifest import Manifest


@dataclass
class EvalContext:
    manifest: Manifest
    scorer: Scorer
    tokenizer: Tokenizer
    items: dict[str, list[tuple[int, np.ndarray]]]
    """experiment → [(copies, tokens as written)] for every payload item, controls included."""
    judge: Scorer | None = None
    """Another checkpoint that judges generations (denial-of-service poisoning), or None."""
    baseline: Scorer | None = None
    """A model that never saw the inserted data (the clean run): paired controls (forgetting), or None."""
    item_losses: dict[str, np.ndarray] = field(default_factory=dict)
    """experiment → each payload item's loss under `scorer`, once `score_items` has run (generic.item_losses)."""

    @classmethod
    def open(cls, manifest: Manifest, scorer: Scorer, judge: Scorer | None = None,
             baseline: Scorer | None = None) -> "EvalContext":
        items_path = manifest.root / manifest.data["items"]["path"]
        return cls(manifest, scorer, _FirstUse(manifest.root / manifest.data["tokenizer"]["path"]),
                   read_items(items_path), judge, baseline)

    def score_items(self) -> None:
        """Every experiment's payload items scored at once: one pass of full batches over all experiments, where
        scoring each experiment alone would leave a part-filled batch per experiment (a demo's eval is mostly those)."""
        names = [name for name, items in self.items.items() if items]
        if not names:
            return
        losses = self.scorer.text_losses([self.text_tokens(tokens) for name in names for _, tokens in self.items[name]])
        ends = np.cumsum([len(self.items[name]) for name in names])
        self.item_losses = dict(zip(names, np.split(losses, ends[:-1])))

    @property
    def eos_id(self) -> int:
        return self.manifest.data["layout"]["eos_id"]

    def records(self, entry: dict) -> dict | None:
        reference = entry.get("eval_records")
        return json.loads((self.manifest.root / reference["path"]).read_text()) if reference else None

    def text_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """An item's own tokens: the EOS wrappers removed."""
        return without_eos_wrappers(tokens, self.eos_id)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def holdout(self) -> np.ndarray | None:
        holdout = self.manifest.data.get("holdout")
        if not holdout:
            return None
        return np.fromfile(self.manifest.root / holdout["path"], dtype=self.manifest.dtype).astype(np.int64)

    def unused_tail_rows(self) -> np.ndarray:
        """Whole instances of the reserved tail that no experiment used: never-trained controls, [n, seq_len]."""
        holdout, seq_len = self.holdout(), self.manifest.layout.seq_len
        if holdout is None:
            return np.zeros((0, seq_len), dtype=np.int64)
        used = max((a["end"] for a in self.manifest.data["holdout"]["allocations"]), default=0)
        return holdout[used:used + (len(holdout) - used) // seq_len * seq_len].reshape(-1, seq_len)


class _FirstUse:
    """The build's tokenizer, read from its file when first used: most families never decode or encode, and
    reading it is a sizeable part of a small build's eval."""

    def __init__(self, path):
        self._path, self._tokenizer = path, None

    def __getattr__(self, name):
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_file(str(self._path))
        return getattr(self._tokenizer, name)
