"""The `injc` commands that take a model (or its reports): train, eval, compare, run, cpdt, verbatim-candidates,
convert. They register on the `injc` group of injc/command.py; injc/cli.py imports this module at its end. Thin click
glue over the Python API."""

from pathlib import Path

import click

from injc.command import main, user_errors
from injc.errors import InjcError
from injc.train.folders import DEFAULT_SETTINGS
from injc.train.tracking import LOGGERS


def _step_list(ctx, param, value):
    if not value:
        return ()
    try:
        steps = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated step counts, got {value!r}") from None
    if any(s < 1 for s in steps):
        raise click.BadParameter("step counts must be ≥ 1")
    return steps



TARGET_OPTION = click.option(
    "--target", help="olmo-core:SEED: build in OLMo-core's order for that data seed; {data} is then the folder "
                     "OLMo-core reads (its files and loader settings in export.json).")

@main.command(short_help="Train a LitGPT model on the shards, step-exact.")
@click.argument("manifest", type=click.Path())
@click.option("--model", help="LitGPT config name (e.g. pythia-14m) or a YAML file of Config fields (a fresh model); "
                              "with --resume, default: the checkpoint's own model_config.yaml.")
@click.option("--init", "init", type=click.Path(file_okay=False),
              help="Continue from this checkpoint (its weights and config) instead of --model: a LitGPT folder, or "
                   "a Hugging Face folder of GPT-NeoX/Pythia, Llama or OLMo-2 (converted by LitGPT's converter).")
@click.option("--init-optimizer", is_flag=True,
              help="With --init: load its optimizer.pth too (without it: a fresh AdamW).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--micro-batch-size", type=click.IntRange(min=1), show_default=str(DEFAULT_SETTINGS["micro_batch_size"]),
              help="Rows per forward pass (gradients accumulate to one step per manifest step).")
@click.option("--steps", type=click.IntRange(min=1), help="Train only the first N steps.")
@click.option("--save-steps", callback=_step_list,
              help="Checkpoint after exactly these step counts, a list: 100,250,1000 (see --save-every).")
@click.option("--save-every", type=click.IntRange(min=1),
              help="Checkpoint after every N steps: 100 saves after steps 100, 200, ... (see --save-steps).")
@click.option("--resume", is_flag=True, help="Continue after the latest checkpoint in --out (same manifest only).")
@click.option("--force", is_flag=True, help="Replace an earlier run in --out (a folder holding only what injc "
                                           "train writes). Without --resume or --force, --out must be empty.")
@click.option("--audit", is_flag=True, help="Write OUT/audit.jsonl: sha256 of every step's batch.")
@click.option("--verify", "full_verify", is_flag=True, help="Re-hash every shard before training.")
@click.option("--lr", type=float, show_default=str(DEFAULT_SETTINGS["lr"]), help="Peak learning rate.")
@click.option("--min-lr", type=float, show_default=str(DEFAULT_SETTINGS["min_lr"]),
              help="Learning rate at the end of the cosine decay.")
@click.option("--warmup-steps", type=click.IntRange(min=0), show_default="10% of the run, at most 2,000",
              help="Steps of linear warmup to --lr.")
@click.option("--weight-decay", type=float, show_default=str(DEFAULT_SETTINGS["weight_decay"]),
              help="AdamW weight decay.")
@click.option("--grad-clip", type=float, show_default=str(DEFAULT_SETTINGS["grad_clip"]),
              help="Max gradient norm, 0 = no clipping.")
@click.option("--seed", type=int, show_default="the plan's seed", help="Model init seed.")
@click.option("--override-settings", is_flag=True,
              help="With --resume: settings given here replace the recorded ones. Without it a resumed run keeps "
                   "every recorded setting (--lr, --min-lr, --warmup-steps, --weight-decay, --grad-clip, "
                   "--micro-batch-size, --seed), and a different value given is an error.")
@click.option("--device", show_default="cuda when available", help="cpu, cuda, ...")
@click.option("--precision", type=click.Choice(["bf16-mixed", "32-true"]),
              show_default="bf16-mixed on CUDA, 32-true elsewhere",
              help="Lightning's precision: bf16 autocast with float32 weights, or float32.")
@click.option("--devices", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes on this machine (Lightning Fabric DDP; spawned by this command). Each step still "
                   "consumes exactly the step's batch: rank r takes rows [r·B/N, (r+1)·B/N).")
@click.option("--num-nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Machines (launch one process per device on each, as Fabric does: torchrun or Slurm).")
@click.option("--strategy", type=click.Choice(["ddp", "fsdp"]), default="ddp", show_default=True,
              help="Several devices: ddp (each rank holds the whole model) or fsdp (parameters, gradients and "
                   "optimizer state sharded over the ranks).")
@click.option("--logger", type=click.Choice(LOGGERS),
              help="Also log loss, learning rate and tokens/s per step under OUT/logs/ (Lightning's loggers; "
                   "wandb honours WANDB_MODE=offline). metrics.jsonl is written either way.")
@click.option("--hf", is_flag=True, help="Also write every checkpoint as a Hugging Face folder (<checkpoint>/hf), "
                                        "which transformers, vLLM and lm-evaluation-harness load.")
@click.option("--quiet", is_flag=True, help="No progress bar and no closing summary.")
@user_errors
def train(manifest, model, init, init_optimizer, out_dir, micro_batch_size, steps, save_steps, save_every, resume,
          force, audit, full_verify, lr, min_lr, warmup_steps, weight_decay, grad_clip, seed, override_settings,
          device, precision, devices, num_nodes, strategy, logger, hf, quiet):
    """Train a LitGPT model on MANIFEST's shards, step-exact: step s is exactly stream[s*B*L:(s+1)*B*L]."""
    try:
        from injc.train.trainer import TrainConfig
        from injc.train.trainer import train as run_train
    except ImportError as error:
        raise InjcError(f"training needs torch and litgpt ({error.name} is missing): "
                        "pip install torch==2.13.0 && pip install -e '.[train]'") from None
    config = TrainConfig(model=model, out=out_dir, init=init, init_optimizer=init_optimizer,
                         micro_batch_size=micro_batch_size, steps=steps, save_steps=save_steps,
                         save_every=save_every, resume=resume, force=force, audit=audit, verify=full_verify, lr=lr,
                         min_lr=min_lr, warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
                         seed=seed, override_settings=override_settings, device=device, precision=precision,
                         devices=devices,
                         num_nodes=num_nodes, strategy=strategy, logger=logger, hf=hf)
    run_train(manifest, config, progress=not quiet)  # its closing summary names the checkpoints (not with --quiet)


@main.command(short_help="The continual pretraining dependence test.")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--checkpoint", required=True, type=click.Path(file_okay=False),
              help="The checkpoint every row continues from: LitGPT's, or a Hugging Face GPT-NeoX, Llama or OLMo-2 "
                   "folder (its vocabulary and context must fit the plan).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Design folder.")
@click.option("--steps", type=click.IntRange(min=1), help="Steps per row (default: the plan's run; never more).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Repeats: seed s moves placements, items (plan seed + s) and the corpus window (s runs further "
                   "in); p-values test over seeds, over items with 1.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rows trained at once, in separate processes.")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Each experiment's share of a row's tokens, by rescaling its copies (default: the plan's shares; "
                   "explicit placements keep theirs).")
@click.option("--lr", type=float, default=4e-4, show_default=True, help="Peak learning rate of each row's run.")
@click.option("--min-lr", type=float, default=4e-5, show_default=True,
              help="Learning rate at the end of each row's cosine decay.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Steps of linear warmup at the start of each row (the checkpoint is already trained).")
@click.option("--micro-batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Rows per forward pass (gradients accumulate to one step per manifest step).")
@click.option("--device", show_default="cuda when available", help="cpu, cuda, ...")
@click.option("--logger", type=click.Choice(LOGGERS),
              help="Also log each row's training under its run folder (SEED/ROW/run/logs/).")
@click.option("--train-cmd", help="Train each row with this shell command instead of injc train: {manifest} {data} "
                                  "{from_step} {to_step} {init} {out} are filled in ({init}: --checkpoint); it must "
                                  "leave a checkpoint (HF or LitGPT) in {out}. Output: ROW/run/window-0000.log.")
@TARGET_OPTION
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def cpdt(plan, checkpoint, out_dir, steps, seeds, jobs, fraction, lr, min_lr, warmup_steps, micro_batch_size, device,
         logger, train_cmd, target, quiet):
    """Continual pretraining dependence test: one short run from --checkpoint per row (none, each experiment
    alone, all), every experiment's outcome after each; writes cpdt.json, cpdt.md and cpdt.png under --out.

    A killed run continues with the rows it has not finished when the same command is run again.
    """
    try:
        from injc.loop.cpdt import CpdtConfig
        from injc.loop.cpdt import cpdt as run_cpdt
    except ImportError as error:
        raise InjcError(f"cpdt needs torch and litgpt ({error.name} is missing): "
                        "pip install torch==2.13.0 && pip install -e '.[train]'") from None
    config = CpdtConfig(checkpoint=checkpoint, steps=steps, seeds=seeds, jobs=jobs, lr=lr, min_lr=min_lr,
                        warmup_steps=warmup_steps, micro_batch_size=micro_batch_size, device=device,
                        fraction=fraction, logger=logger, train_cmd=train_cmd, target=target)
    run_cpdt(plan, config, out_dir, progress=not quiet)
    click.echo(f"wrote {out_dir}/cpdt.json, cpdt.md and cpdt.png")


@main.command(name="run", short_help="The dynamic-control loop: build, train, probe, decide.")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--model", help="LitGPT config name or YAML file of Config fields (a fresh model).")
@click.option("--init", "init", type=click.Path(file_okay=False),
              help="Instead of --model: continue from this checkpoint (weights and config): LitGPT's, or a Hugging "
                   "Face GPT-NeoX, Llama or OLMo-2 folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Loop folder: build/, train/, control.jsonl, control.png, eval/.")
@click.option("--micro-batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Rows per forward pass (gradients accumulate to one step per manifest step).")
@click.option("--lr", type=float, default=4e-4, show_default=True, help="Peak learning rate.")
@click.option("--min-lr", type=float, default=4e-5, show_default=True, help="Learning rate at the end of the cosine "
                                                                            "decay over the whole run.")
@click.option("--seed", type=int, show_default="the plan's seed", help="Model init seed.")
@click.option("--device", show_default="cuda when available", help="cpu, cuda, ...")
@click.option("--no-eval", is_flag=True, help="Skip the final injc eval of the last checkpoint.")
@click.option("--logger", type=click.Choice(LOGGERS),
              help="Also log training (OUT/train/logs/) and each window's probe, target and count (OUT/logs/).")
@click.option("--train-cmd", help="Train each window with this shell command instead of injc train (with --init): "
                                  "{manifest} {data} {from_step} {to_step} {init} {out} are filled in; it must "
                                  "leave a checkpoint (HF or LitGPT) in {out}. Output: OUT/train/window-NNNN.log.")
@TARGET_OPTION
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def run_command(plan, model, init, out_dir, micro_batch_size, lr, min_lr, seed, device, no_eval, logger, train_cmd,
                target, quiet):
    """The dynamic-control loop for per_window = "dynamic" experiments: build a window, train to its end, probe,
    decide the next window's count (the paper's Algorithm 1 or the plan's controller), ..., evaluate.

    Killed at any moment, the same command continues from the last finished window with identical results.
    """
    try:
        from injc.loop.control import RunConfig, probe_table, run
    except ImportError as error:
        raise InjcError(f"run needs torch and litgpt ({error.name} is missing): "
                        "pip install torch==2.13.0 && pip install -e '.[train]'") from None
    summary = run(RunConfig(Path(plan), Path(out_dir), model=model, init=Path(init) if init else None,
                            micro_batch_size=micro_batch_size, lr=lr, min_lr=min_lr, device=device, seed=seed,
                            evaluate=not no_eval, progress=not quiet, logger=logger, train_cmd=train_cmd,
                            target=target))
    click.echo(probe_table(summary), nl=False)
    click.echo(f"final probe {', '.join(f'{k} {v:.4f}' for k, v in summary['final_probe'].items())}; wrote "
               f"{out_dir}/control.jsonl, control.png" + ("" if no_eval else ", eval/"))


@main.command(name="verbatim-candidates", short_help="Windows a model completes verbatim.")
@click.argument("manifest", type=click.Path())
@click.option("--checkpoint", required=True, type=click.Path(file_okay=False),
              help="The model to test windows on: a LitGPT checkpoint or a Hugging Face folder.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="JSONL to write: one {\"tokens\", \"offset\"} per window (verbatim-removal's file).")
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True, help="Stop after this many.")
@click.option("--prefix", type=click.IntRange(min=1), default=25, show_default=True,
              help="Tokens the model is given (the window's start).")
@click.option("--suffix", type=click.IntRange(min=1), default=25, show_default=True,
              help="Tokens its greedy continuation must reproduce exactly.")
@click.option("--stride", type=click.IntRange(min=1), show_default="prefix + suffix",
              help="Tokens between window starts.")
@click.option("--max-windows", type=click.IntRange(min=1), help="Scan at most this many windows.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def verbatim_candidates(manifest, checkpoint, out_file, count, prefix, suffix, stride, max_windows, quiet):
    """Windows of MANIFEST's stream that --checkpoint completes verbatim (greedy continuation of the prefix equals
    the suffix; windows inside one row, without EOS), the paper's selection for verbatim removal."""
    try:
        from injc.evals.verbatim_candidates import candidates
    except ImportError as error:
        raise InjcError(f"verbatim-candidates needs torch and litgpt ({error.name} is missing): "
                        "pip install torch==2.13.0 && pip install -e '.[train]'") from None
    found = candidates(manifest, checkpoint, out_file, count, prefix, suffix, stride, max_windows, not quiet)
    click.echo(f"wrote {out_file}: {len(found):,} windows completed verbatim")


@main.command(name="eval", short_help="Measure every experiment's effect on checkpoints.")
@click.argument("manifest", type=click.Path())
@click.argument("more_checkpoints", nargs=-1, type=click.Path(file_okay=False), metavar="[CHECKPOINT]...")
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              help="A checkpoint folder: LitGPT's (lit_model.pth + model_config.yaml) or a Hugging Face model "
                   "folder (config.json + safetensors), scored on the build's token ids. For curves: repeat it, "
                   "list more folders after it (what the shell makes of --checkpoint runs/r/step-*), or quote a glob "
                   "(--checkpoint 'runs/r/step-*').")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--verify", "full_verify", is_flag=True, help="Re-hash the build (injc verify) before evaluating.")
@click.option("--judge", type=click.Path(file_okay=False),
              help="A checkpoint that judges generations by perplexity (denial-of-service poisoning), e.g. the "
                   "clean control run's model.")
@click.option("--baseline", type=click.Path(file_okay=False),
              help="A checkpoint that never saw the inserted data (the clean run, `injc build --clean`): each "
                   "forgetting batch is compared with itself under it, row by row.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Sequences per forward pass.")
@click.option("--precision", type=click.Choice(["bf16-mixed", "32-true"]),
              show_default="bf16-mixed on CUDA, 32-true elsewhere",
              help="bf16 autocast or float32 forward passes.")
@click.option("--logger", type=click.Choice(LOGGERS),
              help="Also log every checkpoint's metrics at its training step (REPORT/logs/), for curves.")
@click.option("--force", is_flag=True, help="Replace an earlier report in --out, whole (a folder holding only what "
                                           "injc eval writes). Without it, --out must be empty or absent.")
@click.option("--benchmarks", help="Also run these lm-evaluation-harness tasks on each checkpoint (comma-separated "
                                   "task names; offline: their data must be local or in the HF cache). Needs the "
                                   "benchmarks extra.")
@click.option("--tasks-dir", type=click.Path(), help="Task YAML files or folders of your own (lm-eval's include_path).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def eval_command(manifest, more_checkpoints, checkpoints, out_dir, full_verify, judge, baseline, batch_size, precision,
                 logger, force, benchmarks, tasks_dir, quiet):
    """Measure every experiment of MANIFEST on checkpoints: report.json, report.md and PNG plots under --out."""
    try:
        from injc.evals.report import evaluate, summary_lines
    except ImportError as error:
        raise InjcError(f"evals need torch and litgpt ({error.name} is missing): "
                        "pip install torch==2.13.0 && pip install -e '.[train]'") from None
    if tasks_dir and not benchmarks:
        raise InjcError("--tasks-dir goes with --benchmarks (the tasks to run from it)")
    if full_verify:
        from injc.shards.verify import verify as run_verify

        problems = run_verify(manifest)
        if problems:
            raise InjcError("the build does not match its manifest (injc verify):", *(f"  {p}" for p in problems))
    report = evaluate(manifest, [*checkpoints, *more_checkpoints], out_dir, progress=not quiet, judge=judge,
                      baseline=baseline, on_warning=lambda warning: click.echo(f"injc: warning: {warning}", err=True),
                      batch_size=batch_size, precision=precision, logger=logger, force=force, tasks_dir=tasks_dir,
                      benchmarks=[t.strip() for t in benchmarks.split(",") if t.strip()] if benchmarks else None)
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"wrote {out_dir}/report.json, report.md and plots")


@main.command(short_help="Compare two eval reports: the minimal-impact table.")
@click.argument("report_a", type=click.Path())
@click.argument("report_b", type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Comparison folder.")
@click.option("--seed-report", "seeds", multiple=True, type=click.Path(),
              help="The report of a further clean run differing only in the model seed (repeat it): the largest "
                   "difference between REPORT_A and these is each metric's equivalence margin.")
@click.option("--margin", type=float, help="Equivalence margin for every metric (loss in nats, accuracy as a share); "
                                           "replaces the seed spread.")
@click.option("--runs", nargs=2, type=click.Path(file_okay=False),
              help="The two runs' folders (metrics.jsonl): their loss and gradient-norm curves on one plot.")
@click.option("--logger", type=click.Choice(LOGGERS), help="Also log the differences (OUT/logs/).")
@click.option("--force", is_flag=True, help="Replace an earlier comparison in --out.")
@user_errors
def compare(report_a, report_b, out_dir, seeds, margin, runs, logger, force):
    """Compare REPORT_B with REPORT_A (injc eval reports, folders or report.json; the run with the experiments and
    the run without): held-out loss per row and each benchmark's accuracy per item, paired, with intervals, tests and
    an equivalence verdict. Writes compare.json, compare.md and plots under --out."""
    from injc.evals.compare import compare as run_compare

    result = run_compare(report_a, report_b, out_dir, seeds, margin, runs or None, force, logger)
    rows = {"held-out loss": result["heldout_loss"], **{f"{t} acc": r for t, r in result["benchmarks"].items()}}
    for name, r in rows.items():
        verdict = "" if "equivalent" not in r else (f"; equivalent within ±{r['margin']:.4g}" if r["equivalent"] else
                                                     f"; not shown equivalent within ±{r['margin']:.4g}")
        low, high = r["difference_ci95"]
        click.echo(f"{name}: B − A {r['difference']:+.4f} [{low:+.4f}, {high:+.4f}], p {r['p_value']:.3g}{verdict}")
    click.echo(f"wrote {out_dir}/compare.json, compare.md and plots")


@main.command(short_help="Convert a checkpoint between LitGPT and Hugging Face.")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--to", "to", required=True, type=click.Choice(["hf", "litgpt"]),
              help="hf: a Hugging Face folder (from a LitGPT checkpoint or nanoGPT's ckpt.pt); litgpt: a LitGPT "
                   "checkpoint (from a Hugging Face GPT-NeoX, Llama or OLMo-2 folder).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="The folder to write.")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="The build whose tokenizer goes into the HF folder (default: the one the checkpoint's "
                   "train_state.json names).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@user_errors
def convert(checkpoint, to, out_dir, manifest, force):
    """Convert CHECKPOINT between LitGPT's format and a Hugging Face folder (LitGPT's own weight converters)."""
    try:
        from injc.train.hf import convert as run_convert
    except ImportError as error:
        raise InjcError(f"convert needs torch, litgpt and transformers ({error.name} is missing): "
                        "pip install torch==2.13.0 && pip install -e '.[train,hf]'") from None
    click.echo(f"wrote {run_convert(checkpoint, to, out_dir, manifest, force)}")
