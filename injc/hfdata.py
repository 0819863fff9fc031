"""Hugging Face `datasets`, offline, for the corpus (injc.compiler.hf_corpus) and for payload files that are saved
datasets (injc.injectors.saved). injc never downloads: offline mode is set before `datasets` is imported. What a
saved folder holds (its splits, Arrow files, columns) is read from its JSON, without importing `datasets`."""

import json
import os
from pathlib import Path

from injc.errors import InputError


def offline_datasets():
    """The `datasets` module with its hub access off (a dataset must already be on disk)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import datasets
    except ImportError:
        raise InputError('reading a Hugging Face dataset needs the datasets package: pip install -e ".[datasets]"') \
            from None
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def is_saved_dataset(folder: Path) -> bool:
    """A folder `save_to_disk` wrote: a Dataset (state.json) or a DatasetDict (dataset_dict.json)."""
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def saved_splits(folder: Path) -> list[str] | None:
    """The splits of a saved DatasetDict (None for a saved Dataset)."""
    if not (folder / "dataset_dict.json").is_file():
        return None
    return json.loads((folder / "dataset_dict.json").read_text())["splits"]


def saved_files(folder: Path, split: str | None) -> tuple[list[Path], dict, list[str]]:
    """(Arrow files in order, state.json, problems) of the split of a `save_to_disk` folder, from its JSON alone."""
    single = not (folder / "dataset_dict.json").is_file()
    if not single:
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        split = split or "train"
        if split not in splits:
            return [], {}, [f"{str(folder)!r} has no split {split!r} (its splits: {', '.join(splits)})"]
        folder = folder / split
    try:
        state = json.loads((folder / "state.json").read_text())
        info = json.loads((folder / "dataset_info.json").read_text())
    except (OSError, ValueError):
        return [], {}, [f"{str(folder)!r} is not a Hugging Face dataset folder (no state.json and dataset_info.json, "
                        f"or dataset_dict.json): write it with save_to_disk, or name data files with builder"]
    if single and split not in (None, "train", state.get("_split")):  # "train", the default, names one Dataset
        return [], {}, [f"{str(folder)!r} holds one Dataset (split {state.get('_split')!r}), not a DatasetDict: "
                        f"leave out split"]
    return [folder / f["filename"] for f in state["_data_files"]], {**state, "features": info.get("features")}, []
