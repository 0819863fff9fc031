"""`contamination`: benchmark questions inserted in tiers of repetitions, with a never-inserted holdout tier.

Plan keys: file (JSONL: question, choices, answer index, optional benchmark), tiers (repetitions → number of
questions; tier 0 is the holdout), format (template over {question}, {answer_text}, {choices}, {benchmark}),
placement random | range. Which question falls in which tier is drawn from the plan seed and recorded in
evals/NAME.json with each question's choices and answer, for the accuracy-per-tier eval.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.errors import InputError
from injc.injectors.base import Context, Payload, Placement, check_records, check_template, read_jsonl
from injc.tables import TableReader

DEFAULT_TIERS = {0: 1000, 4: 800, 12: 500, 36: 200, 144: 200}
DEFAULT_FORMAT = "Question: {question}\nAnswer: {answer_text}"
FIELDS = {"question", "answer_text", "choices", "benchmark"}


def read_tiers(reader: TableReader, key: str, default: dict[int, int]) -> dict[int, int] | None:
    """A TOML table {repetitions = count}; keys are whole numbers ≥ 0 written as TOML keys."""
    value = reader.get(key, {str(repetitions): count for repetitions, count in default.items()})  # as TOML writes it
    if not isinstance(value, dict) or not value:
        reader.problem("expected a table like {0 = 1000, 4 = 800}", key)
        return None
    tiers = {}
    for repetitions, count in value.items():
        if not repetitions.isdigit() or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            reader.problem(f"entry {repetitions!r} = {count!r}: keys are repetitions (0, 1, 2, ...) and values "
                           f"question counts ≥ 0", key)
            return None
        tiers[int(repetitions)] = count
    return dict(sorted(tiers.items()))


def read_choice_questions(path: Path, name: str) -> list[dict]:
    """Multiple-choice records with a valid answer index; errors name the line."""
    records = read_jsonl(path, name)
    check_records(name, path, records, _is_question,
                  'needs "question" (string), "choices" (≥ 2 strings) and "answer" (an index into choices)')
    return records


def _is_question(record: dict) -> bool:
    choices, answer = record.get("choices"), record.get("answer")
    return (isinstance(record.get("question"), str) and isinstance(choices, list) and len(choices) >= 2
            and all(isinstance(c, str) for c in choices) and not isinstance(answer, bool)
            and isinstance(answer, int) and 0 <= answer < len(choices))


@dataclass(frozen=True)
class ContaminationConfig:
    name: str
    kind: str
    file: Path
    tiers: dict
    """Repetitions → number of questions; tier 0 is the never-inserted holdout."""
    format: str
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        file = reader.path("file", base)
        tiers = read_tiers(reader, "tiers", DEFAULT_TIERS)
        template = reader.str("format", DEFAULT_FORMAT)
        check_template(reader, "format", template, FIELDS, {"question"})
        placement = Placement.read(reader, steps, allow_explicit=False)
        return cls(name, kind, file, tiers, template, placement)

    def payload(self, ctx: Context) -> Payload:
        records = read_choice_questions(self.file, self.name)
        need = sum(self.tiers.values())
        if need > len(records):
            raise InputError(f"experiment {self.name!r}: tiers need {need:,} questions, {str(self.file)!r} has "
                             f"{len(records):,}")
        chosen = ctx.rng(self.name, "tiers").permutation(len(records))[:need]
        tier_of = np.repeat(list(self.tiers), list(self.tiers.values()))
        texts = [self.format.format(question=records[i]["question"],
                        answer_text=records[i]["choices"][records[i]["answer"]],
                        choices="\n".join(records[i]["choices"]), benchmark=records[i].get("benchmark", ""))
                 for i in chosen]
        items = [ctx.wrap(tokens) for tokens in ctx.encode(texts)]
        ctx.check_items(self.name, items, "question")
        questions = [{"item": item, "source_index": int(source), "tier": int(tier),
                      "question": records[source]["question"], "choices": records[source]["choices"],
                      "answer": records[source]["answer"], "benchmark": records[source].get("benchmark", "")}
                     for item, (source, tier) in enumerate(zip(chosen, tier_of))]
        return Payload(
            items, tier_of.astype(np.int64), self.placement,
            summary={"repetitions": list(self.tiers), "tiers": {str(k): v for k, v in self.tiers.items()},
                     "holdout": self.tiers.get(0, 0)},
            eval_records={"kind": self.kind, "format": self.format, "questions": questions},
        )
