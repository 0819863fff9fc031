"""Standard benchmarks through lm-evaluation-harness (`injc eval --benchmarks`): the labs' own harness, not another.

A Hugging Face folder is evaluated as it is; a LitGPT checkpoint is converted first (injc.train.hf.convert, with the
build's tokenizer) into a temporary folder. Tasks are lm-eval task names or YAML files/folders (`tasks_dir`, lm-eval's
`include_path`), read offline: the Hugging Face hub and datasets are put in offline mode before lm-eval loads, so a
task whose data is neither local nor in the HF cache fails with a clear line instead of downloading. lm-eval's own
numbers are kept: each task's metrics with their stderr, and per item its correctness and each choice's
log-likelihood, so two runs can be compared item by item (`injc compare`).
"""

import functools
import tempfile
from pathlib import Path

from injc.errors import InjcError, InputError
from injc.hfdata import offline_datasets
from injc.tables import did_you_mean

EXTRA = "pip install -e '.[benchmarks]'"
ITEM_METRICS = ("acc", "acc_norm")


def _lm_eval():
    """lm-eval, imported in offline mode: datasets and the hub switched offline (injc.hfdata) before lm-eval loads
    them, so a task whose data is not on disk fails instead of downloading."""
    try:
        offline_datasets()
    except InputError:  # no datasets: no lm-eval either
        raise InjcError(f"--benchmarks needs lm-evaluation-harness (datasets is missing): {EXTRA}") from None
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise InjcError(f"--benchmarks needs lm-evaluation-harness ({error.name} is missing): {EXTRA}") from None
    return lm_eval, HFLM, TaskManager


@functools.lru_cache(maxsize=4)
def _task_manager(tasks_dir: str | None, defaults: bool):
    """lm-eval's TaskManager, made once per process: indexing lm-eval's own tasks takes seconds."""
    _, _, TaskManager = _lm_eval()
    return TaskManager(include_path=tasks_dir, include_defaults=defaults)


def check_tasks(tasks: list[str], tasks_dir: str | Path | None = None):
    """lm-eval's TaskManager over `tasks_dir` and its own tasks (`tasks_dir`'s take precedence), with every name in
    `tasks` known and its data read. Tasks all in `tasks_dir` are first read without indexing lm-eval's own."""
    _lm_eval()
    if tasks_dir is not None and not Path(tasks_dir).exists():
        raise InjcError(f"--tasks-dir {str(tasks_dir)!r} does not exist")
    where = str(Path(tasks_dir).resolve()) if tasks_dir is not None else None
    if where is not None and set(tasks) <= set(_task_manager(where, False).all_tasks):
        try:
            return _loaded(tasks, _task_manager(where, False))
        except InjcError:  # a task of tasks_dir that names one of lm-eval's (a group, an include)
            pass
    manager = _task_manager(where, True)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        raise InjcError(*(f"--benchmarks: lm-eval has no task {name!r}" + did_you_mean(name, manager.all_tasks)
                          + ("" if tasks_dir else " (a task of your own: --tasks-dir)") for name in unknown))
    return _loaded(tasks, manager)


def _loaded(tasks: list[str], manager):
    """The manager, once every task's data has been loaded through it (before anything is scored)."""
    from lm_eval.tasks import get_task_dict

    try:
        get_task_dict(list(tasks), manager)
    except Exception as error:  # datasets and lm-eval raise many kinds for data that is not on disk
        raise InjcError(f"--benchmarks: cannot load the tasks' data ({type(error).__name__}: {error}); injc "
                        f"downloads nothing: a task's data must be in local files or the Hugging Face cache") from None
    return manager


def hf_model(checkpoint: str | Path, manifest: str | Path | None, scratch: Path) -> tuple[Path, object | None]:
    """The checkpoint as a Hugging Face folder (as it is, or converted into `scratch`) and the tokenizer lm-eval
    should use: None for the folder's own, else the build's (a folder without one; injc eval has checked that the
    model's embedding rows fit the build's ids)."""
    from injc.train.hf import HF, checkpoint_format, convert

    folder = Path(checkpoint)
    if checkpoint_format(folder) != HF:
        folder = convert(folder, "hf", scratch / "hf", manifest)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        return folder, None
    if manifest is None:
        raise InjcError(f"--benchmarks: {str(checkpoint)!r} has no tokenizer, and no build's tokenizer was given to "
                        f"pair with it")
    from transformers import PreTrainedTokenizerFast

    from injc.shards.manifest import load_manifest

    build = load_manifest(manifest)
    path = build.root / build.data["tokenizer"]["path"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(build.data["layout"]["eos_id"])
    return folder, tokenizer


def run_benchmarks(checkpoint: str | Path, tasks: list[str], manifest: str | Path | None = None,
                   tasks_dir: str | Path | None = None, batch_size: int = 16, device: str | None = None) -> dict:
    """lm-eval's results for `tasks` on `checkpoint`: {"lm_eval": version, "tasks": {TASK: {"metrics": {acc,
    acc_stderr, acc_norm, ...}, "items": [{"doc_id", "acc", "acc_norm", "loglikelihoods"}]}}}."""
    lm_eval, HFLM, _ = _lm_eval()
    manager = check_tasks(tasks, tasks_dir)
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="injc-benchmarks-") as scratch:
        folder, tokenizer = hf_model(checkpoint, manifest, Path(scratch))
        model = HFLM(pretrained=str(folder), tokenizer=tokenizer, batch_size=batch_size, device=device)
        results = lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, log_samples=True,
                                          batch_size=batch_size, device=device)
    return {"lm_eval": lm_eval.__version__, "tasks": {name: _task_result(results, name) for name in tasks}}


def _task_result(results: dict, name: str) -> dict:
    metrics = {}
    for key, value in results["results"].get(name, {}).items():
        metric, _, filter_name = key.partition(",")
        if filter_name and isinstance(value, (int, float)):
            metrics[metric] = float(value)
    items = [{"doc_id": int(sample["doc_id"]),
              **{m: float(sample[m]) for m in ITEM_METRICS if m in sample},
              "loglikelihoods": [float(r[0]) for r in sample["filtered_resps"]]
              if sample.get("filtered_resps") and isinstance(sample["filtered_resps"][0], (list, tuple)) else None}
             for sample in results.get("samples", {}).get(name, [])]
    return {"metrics": metrics, "items": sorted(items, key=lambda item: item["doc_id"])}


def tier_task(experiment: str, tier: int) -> str:
    """The lm-eval task name of one contamination tier: injc_NAME_holdout, injc_NAME_x4, ..."""
    return f"injc_{experiment}_{'holdout' if tier == 0 else f'x{tier}'}".replace("-", "_")


def write_contamination_tasks(manifest_path: str | Path, out: str | Path) -> list[str]:
    """Every contamination experiment's questions as lm-eval multiple-choice tasks, one per tier (a JSONL of the
    tier's questions and a YAML naming it, under `out`); returns the task names.

    Each prompt is the build's EOS followed by the experiment's format up to {answer_text}, filled with the
    question; each choice is what the format puts there. lm-eval then scores each choice's tokens after the prompt
    given EOS + prompt, as injc's contamination eval does: their log-likelihoods agree item for item, and lm-eval's
    `acc` ranks as injc's `none` normalization does, its `acc_norm` (per character of the choice) as `char`. They
    differ where the format continues after {answer_text} (injc scores those tokens too), for `pmi` benchmarks
    (injc subtracts the choice's log-probability after a bare "Answer:") and `token` ones (injc divides by the
    scored tokens)."""
    import json

    from tokenizers import Tokenizer

    from injc.shards.manifest import load_manifest

    manifest = load_manifest(manifest_path)
    tokenizer = Tokenizer.from_file(str(manifest.root / manifest.data["tokenizer"]["path"]))
    eos = tokenizer.id_to_token(manifest.data["layout"]["eos_id"])
    experiments = [e for e in manifest.experiments if e["kind"] == "contamination" and e.get("eval_records")]
    if not experiments:
        raise InjcError(f"{str(manifest_path)!r} has no contamination experiment to write as lm-eval tasks")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for entry in experiments:
        records = json.loads((manifest.root / entry["eval_records"]["path"]).read_text(encoding="utf-8"))
        head = records["format"].partition("{answer_text}")[0]
        for tier in sorted({q["tier"] for q in records["questions"]}):
            name = tier_task(entry["name"], tier)
            rows = [{"item": q["item"], "benchmark": q["benchmark"], "answer": q["answer"], "choices": q["choices"],
                     "prompt": eos + head.format(question=q["question"], choices="\n".join(q["choices"]),
                                                 benchmark=q["benchmark"])}
                    for q in records["questions"] if q["tier"] == tier]
            data = (out / f"{name}.jsonl").resolve()
            data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
            (out / f"{name}.yaml").write_text(
                f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
                "test_split: test\noutput_type: multiple_choice\ndoc_to_text: prompt\ndoc_to_target: answer\n"
                "doc_to_choice: choices\ntarget_delimiter: \"\"\nmetric_list:\n"
                "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
                "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
                f"metadata:\n  version: 1\n  source: injc contamination experiment {entry['name']!r}, tier {tier}\n",
                encoding="utf-8")
            names.append(name)
    return names
