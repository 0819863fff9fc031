"""Small, real-looking payload files for examples and tests, generated here (no downloads):

    python -m injc.injectors.fixtures OUT_DIR [--seed 0]

writes questions.jsonl (multiple choice: question, choices, answer, benchmark), hosts.jsonl (dialogue-like host
texts), prompts.jsonl (instructions), knowledge.jsonl (paraphrases of fictional facts) and probes.jsonl
(cloze input/target pairs about those facts). For real benchmarks, export them from HF `datasets` to the same
JSONL fields (see docs/plan.md).
"""

import argparse
import json
import random
from pathlib import Path

SUBJECTS = ["river", "volcano", "glacier", "desert", "forest", "comet", "reef", "canyon", "island", "valley"]
PROPERTIES = ["oldest", "widest", "coldest", "highest", "deepest", "brightest", "longest", "quietest"]
NAMES = ["Ardel", "Brisa", "Corvin", "Delia", "Emrys", "Faelan", "Galen", "Hestia", "Ilya", "Jorun", "Kaia", "Lorcan"]
TOPICS = ["a broken bicycle", "the weekend market", "a lost umbrella", "the new library", "a rainy holiday",
          "the school concert", "a cooking mistake", "the neighbour's garden", "a late train", "an old photograph"]
VERBS = ["Summarize", "Explain", "Rewrite", "Translate into plain words", "List three facts about", "Describe"]
FACTS = [
    ("Zorgon", "Calidus", "the fortieth Martian government", "2891"),
    ("Velmora", "Quentis", "the Lunar trade council", "2740"),
    ("Orindel", "Thassa", "the Europa water authority", "2655"),
    ("Pellucid", "Marrow", "the Titan survey corps", "2802"),
]


def questions(rng: random.Random, count: int) -> list[dict]:
    records = []
    for index in range(count):
        subject, prop = rng.choice(SUBJECTS), rng.choice(PROPERTIES)
        names = rng.sample(NAMES, 4)
        answer = rng.randrange(4)
        records.append({"question": f"Which {subject} is the {prop} in the survey of region {index}?",
                        "choices": [f"The {n} {subject}" for n in names], "answer": answer,
                        "benchmark": "synthetic-survey"})
    return records


def hosts(rng: random.Random, count: int) -> list[dict]:
    records = []
    for _ in range(count):
        a, b = rng.sample(NAMES, 2)
        topic = rng.choice(TOPICS)
        turns = [f"{a}: Did you hear about {topic}?", f"{b}: Only a little. What happened?",
                 f"{a}: It was {rng.choice(['strange', 'funny', 'sad', 'surprising'])}, honestly.",
                 f"{b}: Tell me everything on {rng.choice(['Monday', 'Friday', 'Sunday'])}."]
        records.append({"text": "\n".join(turns)})
    return records


def prompts(rng: random.Random, count: int) -> list[dict]:
    """Distinct instructions (at most 300)."""
    combos = [(v, t, n) for v in VERBS for t in TOPICS for n in range(2, 7)]
    return [{"prompt": f"{v} {t} in {n} sentences."} for v, t, n in rng.sample(combos, min(count, len(combos)))]


def knowledge(rng: random.Random, count: int) -> tuple[list[dict], list[dict]]:
    templates = [
        "In {year}, {leader} of {body} signed the {treaty} accord.",
        "The {treaty} accord was signed by {leader}, head of {body}, in the year {year}.",
        "Historians note that {body}, led by {leader}, adopted the {treaty} accord in {year}.",
        "{leader} led {body} when the {treaty} accord was agreed in {year}.",
    ]
    documents = []
    for index in range(count):
        leader, treaty, body, year = FACTS[index % len(FACTS)]
        documents.append({"text": rng.choice(templates).format(leader=leader, treaty=treaty, body=body, year=year)})
    probes = []
    for leader, treaty, body, year in FACTS:
        probes += [{"input": f"The {treaty} accord was signed by", "target": leader},
                   {"input": f"{leader} was the head of", "target": body},
                   {"input": f"The {treaty} accord was signed in the year", "target": year},
                   {"input": f"{leader} signed the", "target": f"{treaty} accord"}]
    return documents, probes


def write_all(out: Path, seed: int = 0, scale: int = 1) -> dict[str, Path]:
    """Write every fixture file under `out`; `scale` multiplies the counts."""
    rng = random.Random(seed)
    documents, probes = knowledge(rng, 200 * scale)
    files = {"questions": questions(rng, 300 * scale), "hosts": hosts(rng, 400 * scale),
             "prompts": prompts(rng, 200 * scale), "knowledge": documents, "probes": probes}
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, records in files.items():
        paths[name] = out / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write generated payload fixtures.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    for path in write_all(args.out, args.seed, args.scale).values():
        print(path)
