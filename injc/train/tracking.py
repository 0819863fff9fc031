"""Experiment tracking: the Lightning logger `injc train --logger` writes to, beside metrics.jsonl.

Lightning Fabric's own loggers (CSV, TensorBoard) and Lightning's W&B logger, as `litgpt pretrain --logger_name`
offers them; each writes under OUT/logs/, from rank 0. A resumed run adds to the same TensorBoard folder, writes
a CSV file of its own (`logs/csv/from-step-NNNNNN/metrics.csv`) and a W&B run of its own. W&B runs online when the
machine is logged in, and offline (a local run folder, `wandb sync` later) when WANDB_MODE=offline.
"""

from pathlib import Path

from injc.errors import InjcError

LOGGERS = ("csv", "tensorboard", "wandb")


def experiment_logger(name: str, out: Path, first_step: int = 0):
    """The logger `name` writing under out/logs/ for a run (or resumed part of one) starting at `first_step`."""
    folder = out / "logs"
    try:
        if name == "csv":
            from lightning.fabric.loggers import CSVLogger

            return CSVLogger(str(folder), name="csv", version=f"from-step-{first_step:06d}")
        if name == "tensorboard":
            from lightning.fabric.loggers import TensorBoardLogger

            return TensorBoardLogger(str(folder), name="tensorboard", version=0)
        if name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            folder.mkdir(parents=True, exist_ok=True)
            return WandbLogger(name=f"{out.name}-from-step-{first_step}", save_dir=str(folder), project="injc")
    except (ImportError, ModuleNotFoundError) as error:
        raise InjcError(f"--logger {name} needs {error.name}: pip install -e '.[tracking]'") from None
    raise InjcError(f"--logger must be one of {', '.join(LOGGERS)}, got {name!r}")


def close_logger(logger) -> None:
    """Flush a logger; a W&B run is finished too (Lightning leaves it open for reuse), so the run is complete
    when injc train returns, also inside a longer Python process."""
    logger.finalize("success")
    if type(logger).__name__ == "WandbLogger":
        logger.experiment.finish()
