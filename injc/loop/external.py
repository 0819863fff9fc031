"""One window of `injc run --train-cmd CMD` (or one row of `injc cpdt --train-cmd CMD`): a training command that is
not injc's, run by the loop.

CMD is a shell command with placeholders, filled in per window (each value shell-quoted):
{manifest} the build's manifest.json; {data} the folder the trainer reads (the build); {from_step}, {to_step}
the steps to train, [from_step, to_step); {init} the checkpoint to continue from (the previous window's, or
--init); {out} where the trainer must leave its checkpoint (a Hugging Face folder or a LitGPT checkpoint).
The trainer's output goes to train/window-NNNN.log. A window counts as done only once injc has seen the command
exit 0 and the checkpoint load (train/window-NNNN.done); a window killed half-way is run again from its start.
"""

import json
import shlex
import shutil
import string
import subprocess
import sys
from pathlib import Path

from injc.errors import CommandFailed, InjcError
from injc.shards.manifest import load_manifest
from injc.train.hf import checkpoint_format

PLACEHOLDERS = ("manifest", "data", "from_step", "to_step", "init", "out")


def check_command(command: str) -> None:
    """Refuse, before any work, a command injc cannot fill in or that does not say where to leave {out}."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(command) if name is not None}
    except ValueError as error:
        raise InjcError(f"--train-cmd {command!r}: {error}") from None
    unknown = sorted(fields - set(PLACEHOLDERS))
    problems = [f"--train-cmd uses {{{name}}}, which injc does not fill in (it fills in "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})" for name in unknown]
    if "out" not in fields:
        problems.append("--train-cmd must use {out}: the folder where the trainer leaves each window's checkpoint")
    if problems:
        raise InjcError(*problems)


def run_window(command: str, train_dir: Path, window: int, manifest: Path, from_step: int, to_step: int,
               init: Path | None, label: str | None = None, progress: bool = True) -> Path:
    """The window's checkpoint folder: run the command (unless a finished run of it is recorded), check its exit
    status and that its checkpoint loads, and record beside it which build and steps it was trained on
    (train_state.json, as injc train writes, unless the trainer wrote one). `label` names the run in messages
    (default: "window N"); `progress` says on stderr which window trains and where its output goes."""
    label = label or f"window {window}"
    folder, log = train_dir / f"window-{window:04d}", train_dir / f"window-{window:04d}.log"
    done = train_dir / f"window-{window:04d}.done"
    if done.is_file():
        return folder
    if progress:
        print(f"injc: {label}: training steps {from_step:,}–{to_step:,} with --train-cmd; output in {log}",
              file=sys.stderr, flush=True)
    shutil.rmtree(folder, ignore_errors=True)  # a window killed half-way starts again
    train_dir.mkdir(parents=True, exist_ok=True)
    values = {"manifest": manifest, "data": manifest.parent, "from_step": from_step, "to_step": to_step,
              "init": init if init is not None else "", "out": folder}
    filled = command.format(**{key: shlex.quote(str(value)) for key, value in values.items()})
    with open(log, "w") as output:
        output.write(f"$ {filled}\n")
        output.flush()
        status = subprocess.run(filled, shell=True, stdout=output, stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise CommandFailed(f"the training command failed in {label} (steps {from_step}–{to_step}, exit "
                            f"{status}); its output is in {log}. Run the same command again to retry it")
    if not folder.is_dir() or not any(folder.iterdir()):
        raise InjcError(f"the checkpoint of {label}: the command exited 0 but left nothing in {{out}} ({folder}); "
                        f"it must write its checkpoint there. Its output is in {log}")
    checkpoint_format(folder, f"the checkpoint of {label} ({log})")
    state = folder / "train_state.json"
    if not state.is_file():  # so injc eval knows the build and the steps, as for its own checkpoints
        built = load_manifest(manifest)
        state.write_text(json.dumps({"steps_done": to_step, "manifest": str(manifest), **built.identity,
                                     "init": str(init) if init is not None else None,
                                     "trained_by": "--train-cmd"}, indent=2) + "\n")
    done.write_text(f"{from_step} {to_step}\n")
    return folder
