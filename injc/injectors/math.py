"""`math`: iGSM-style modular-arithmetic word problems with step-by-step solutions (generated, no files).

As in iGSM, quantities are defined from others: a problem defines 2 to `max_params` base quantities, then `ops`
derived ones, each the sum, difference or product (mod 23) of the previous one and an earlier one (base quantities
no step uses are distractors). The question asks for the last, so its solution graph holds exactly `ops`
operations. The solution defines every quantity in order and ends with `Answer: N`.

Answers are balanced over the modulus: the i-th problem of a set is drawn until its answer is (i + offset) mod 23,
so every residue is equally common (a product with a 0 would otherwise pull answers towards 0). Training problems
use op counts in [ops[0], ops[1]]; test sets (`test_per_op` problems for each count in `test_ops`, unseen larger
counts included) come from another seed and are decontaminated by solution *trace*: the arithmetic of the
solution without the names (the base values, then every `x op y = z` step), so a test problem that repeats a
training computation under other names is redrawn. Each record carries its `trace` and the arithmetic
`expression`, so tests can check both."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from injc.errors import InputError
from injc.injectors.base import Context, Payload, Placement
from injc.tables import TableReader

MODULUS = 23
MAX_OPS = 100
MAX_PARAMS = 40
OBJECTS = ("apples", "pears", "lamps", "books", "stones", "shells", "coins", "seeds", "bells", "ropes", "keys",
           "cups", "nails", "beads", "maps", "jars")
PLACES = ("red box", "green crate", "blue basket", "old chest", "small bag", "stone jar", "wooden shelf",
          "tall cabinet", "iron safe", "glass case")
OPERATIONS = (("+", "the sum of {a} and {b}"), ("-", "the difference of {a} and {b}"),
              ("*", "the product of {a} and {b}"))


DRAWS_PER_PROBLEM = 10_000
"""Attempts before giving up on a balanced, unseen problem (each attempt hits a given answer with p ≈ 1/23)."""


def make_problem(rng: np.random.Generator, ops: int, max_params: int) -> dict:
    """One problem: text, solution, answer, trace, and the fully parenthesized expression that computes the
    answer."""
    pairs = rng.permutation(len(OBJECTS) * len(PLACES))[: max_params + ops]
    names = [f"{OBJECTS[p // len(PLACES)]} per {PLACES[p % len(PLACES)]}" for p in pairs]
    params = int(rng.integers(2, max(2, max_params) + 1))
    values, expressions, statements, steps, trace = [], [], [], [], []
    for index in range(params):
        value = int(rng.integers(0, MODULUS))
        values.append(value)
        expressions.append(str(value))
        statements.append(f"There are {value} {names[index]}.")
        steps.append(f"v{index} = {names[index]} = {value}.")
        trace.append(str(value))
    for index in range(params, params + ops):
        a, b = index - 1, int(rng.integers(index - 1))  # a chain: the answer needs every operation
        symbol, phrase = OPERATIONS[int(rng.integers(len(OPERATIONS)))]
        value = {"+": values[a] + values[b], "-": values[a] - values[b], "*": values[a] * values[b]}[symbol] % MODULUS
        values.append(value)
        expressions.append(f"(({expressions[a]}) {symbol} ({expressions[b]})) % {MODULUS}")
        statements.append(f"The {names[index]} are {phrase.format(a=names[a], b=names[b])}.")
        steps.append(f"v{index} = {names[index]} = v{a} {symbol} v{b} = {values[a]} {symbol} {values[b]} = {value}.")
        trace.append(f"{values[a]} {symbol} {values[b]} = {value}")
    question = f"How many {names[params + ops - 1]}?"
    problem = (f"Solve modulo {MODULUS}.\nProblem: " + " ".join(statements) + f"\nQuestion: {question}")
    solution = "Solution: " + " ".join(steps) + f"\nAnswer: {values[-1]}"
    return {"ops": ops, "problem": problem, "solution": solution, "answer": values[-1],
            "expression": expressions[-1], "trace": "; ".join(trace)}


def balanced_problem(rng: np.random.Generator, ops: int, max_params: int, answer: int, seen: set[str]) -> dict:
    """A problem whose answer is `answer` and whose trace is not in `seen` (drawn again until both hold)."""
    for _ in range(DRAWS_PER_PROBLEM):
        problem = make_problem(rng, ops, max_params)
        if problem["answer"] == answer and problem["trace"] not in seen:
            return problem
    raise InputError(f"no problem with {ops} operations and answer {answer} whose solution trace is new after "
                     f"{DRAWS_PER_PROBLEM:,} draws: ask for fewer problems or allow more base quantities")


@dataclass(frozen=True)
class MathConfig:
    name: str
    kind: str
    count: int
    ops: tuple
    """[min, max] operations per training problem."""
    max_params: int
    test_ops: tuple
    test_per_op: int
    placement: Placement

    @classmethod
    def read(cls, reader: TableReader, name: str, kind: str, base: Path, steps: int | None):
        ops = reader.int_list("ops", [1, 10], 1) or [1, 1]
        if len(ops) != 2 or ops[0] > ops[1] or ops[1] > MAX_OPS:
            reader.problem(f"expected [min, max] with min ≤ max ≤ {MAX_OPS}, got {ops!r}", "ops")
            ops = [1, 1]
        test_ops = reader.int_list("test_ops", list(range(1, ops[1] + 3)), 1) or []
        if test_ops and max(test_ops) > MAX_OPS:
            reader.problem(f"op counts may not exceed {MAX_OPS}", "test_ops")
        return cls(name, kind, reader.int("count", min=1) or 1, tuple(ops), reader.int("max_params", 4, min=2,
                                                                                           max=MAX_PARAMS),
                     tuple(test_ops),
                     reader.int("test_per_op", 50, min=0), Placement.read(reader, steps, allow_explicit=False))

    def payload(self, ctx: Context) -> Payload:
        train_rng, test_rng = ctx.rng(self.name, "train"), ctx.rng(self.name, "test")
        offset = int(train_rng.integers(MODULUS))
        problems = [balanced_problem(train_rng, int(train_rng.integers(self.ops[0], self.ops[1] + 1)),
                                     self.max_params, (index + offset) % MODULUS, set())
                    for index in range(self.count)]
        seen = {p["trace"] for p in problems}
        tests = []
        for ops in self.test_ops:
            offset = int(test_rng.integers(MODULUS))
            for index in range(self.test_per_op):
                tests.append(balanced_problem(test_rng, ops, self.max_params, (index + offset) % MODULUS, seen))
                seen.add(tests[-1]["trace"])
        items = [ctx.wrap(tokens) for tokens in ctx.encode([p["problem"] + "\n" + p["solution"] for p in problems])]
        ctx.check_items(self.name, items, "problem")
        return Payload(
            items, np.ones(len(items), dtype=np.int64), self.placement,
            summary={"ops": list(self.ops), "test_ops": list(self.test_ops), "test_per_op": self.test_per_op},
            eval_records={"kind": self.kind, "modulus": MODULUS, "train": problems, "test": tests},
        )
