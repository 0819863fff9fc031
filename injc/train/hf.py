"""Hugging Face model folders (config.json + safetensors) beside LitGPT checkpoints: telling the two apart by what a
folder holds, and converting between them with LitGPT's own weight converters for the architectures both share
(GPT-NeoX/Pythia, Llama, OLMo-2). Evals read any transformers causal LM directly; only training needs LitGPT's form.
"""

import json
import shutil
from functools import partial
from pathlib import Path

import torch

from injc.errors import InjcError

LITGPT, HF = "litgpt", "hf"
CONVERTIBLE = {"GPTNeoXForCausalLM": "gpt_neox", "LlamaForCausalLM": "llama", "Olmo2ForCausalLM": "olmo2"}
"""HF architectures LitGPT converts, by the HF model_type of each."""


def weight_files(folder: Path) -> list[Path]:
    """The weight files of an HF folder: those its index names, else every *.safetensors, else pytorch_model*.bin."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            names = json.loads((folder / index).read_text())["weight_map"].values()
            return sorted({folder / name for name in names})
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def checkpoint_format(folder: str | Path, option: str = "--checkpoint") -> str:
    """LITGPT (lit_model.pth + model_config.yaml) or HF (config.json + weights); anything else is a clear error."""
    folder = Path(folder)
    if not folder.exists():
        raise InjcError(f"{option} {str(folder)!r} does not exist")
    if (folder / "lit_model.pth").is_file() and (folder / "model_config.yaml").is_file():
        return LITGPT
    if (folder / "config.json").is_file() and weight_files(folder):
        return HF
    raise InjcError(f"{option} {str(folder)!r} is neither a LitGPT checkpoint (lit_model.pth + model_config.yaml) "
                    f"nor a Hugging Face model folder (config.json + *.safetensors or pytorch_model*.bin)")


def read_hf_config(folder: Path) -> dict:
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise InjcError(f"{str(folder)!r}: config.json cannot be read ({error})") from None
    if not isinstance(config, dict):
        raise InjcError(f"{str(folder)!r}: config.json is not a JSON object")
    return config


def hf_context(config: dict) -> int | None:
    """Positions an HF model was built for (None when its config does not say, or says -1 as OLMo-core's does)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def embedding_rows_and_context(folder: str | Path, option: str = "--checkpoint") -> tuple[int, int | None]:
    """(input embedding rows, context) of either kind of folder, from its config alone (no weights loaded)."""
    if checkpoint_format(folder, option) == LITGPT:
        from litgpt import Config

        config = Config.from_file(Path(folder) / "model_config.yaml")
        return config.padded_vocab_size, config.block_size
    config = read_hf_config(folder)
    return int(config.get("vocab_size", 0)), hf_context(config)


def fit_problems(folder: str | Path, vocab: int, seq_len: int, option: str = "--checkpoint") -> list[str]:
    """Why a model folder (either format) cannot score or train on a build: no folder of either kind, fewer
    embedding rows than the build's ids, a context shorter than a row (seq_len − 1). Empty when it fits."""
    try:
        rows, positions = embedding_rows_and_context(folder, option)
    except InjcError as error:
        return error.problems
    problems = []
    if rows < vocab:
        problems.append(f"{option} {str(folder)!r} has {rows:,} embedding rows but the build's tokenizer has "
                        f"{vocab:,} ids: it was trained with another tokenizer")
    if positions is not None and positions < seq_len - 1:
        problems.append(f"{option} {str(folder)!r} has context {positions:,} but the build's rows need "
                        f"{seq_len - 1:,} (seq_len − 1)")
    return problems


def _model_type(config: dict, folder) -> str:
    architecture = (config.get("architectures") or [None])[0]
    model_type = CONVERTIBLE.get(architecture) or config.get("model_type")
    if model_type not in CONVERTIBLE.values():
        raise InjcError(f"{str(folder)!r} is a {architecture or model_type or 'model of unknown architecture'}: "
                        f"LitGPT converts {', '.join(CONVERTIBLE)} only (evals read it as it is)")
    return model_type


def litgpt_config(config: dict, folder, name: str, context: int | None = None) -> "object":
    """The LitGPT Config that computes what an HF GPT-NeoX, Llama or OLMo-2 config describes (block_size: its
    positions, else `context`, else 4096)."""
    model_type = _model_type(config, folder)
    try:
        return _litgpt_config(config, folder, name, context, model_type)
    except KeyError as error:
        raise InjcError(f"{str(folder)!r}: config.json has no {error} for its {model_type} model") from None


def _litgpt_config(config: dict, folder, name: str, context: int | None, model_type: str):
    from litgpt import Config

    common = dict(name=name, block_size=hf_context(config) or context or 4096, vocab_size=config["vocab_size"],
                  padded_vocab_size=config["vocab_size"], n_layer=config["num_hidden_layers"],
                  n_embd=config["hidden_size"], n_head=config["num_attention_heads"],
                  intermediate_size=config["intermediate_size"],
                  rope_base=int(config.get("rope_theta", config.get("rotary_emb_base", 10000))))
    if model_type == "gpt_neox":
        approximate = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}
        if config.get("hidden_act", "gelu") not in approximate:
            raise InjcError(f"{str(folder)!r}: activation {config['hidden_act']!r} has no LitGPT counterpart")
        return Config(**common, rotary_percentage=config.get("rotary_pct", config.get("partial_rotary_factor", 1.0)),
                      parallel_residual=config.get("use_parallel_residual", True), bias=True,
                      norm_class_name="LayerNorm", norm_eps=config.get("layer_norm_eps", 1e-5),
                      mlp_class_name="GptNeoxMLP", gelu_approximate=approximate[config.get("hidden_act", "gelu")])
    if config.get("attention_bias") or config.get("mlp_bias") or config.get("hidden_act", "silu") != "silu":
        raise InjcError(f"{str(folder)!r}: biases or a non-SiLU MLP in a {model_type} model: LitGPT cannot convert it")
    fields = dict(common, n_query_groups=config.get("num_key_value_heads") or config["num_attention_heads"],
                  head_size=config.get("head_dim"), rotary_percentage=1.0, parallel_residual=False, bias=False,
                  norm_class_name="RMSNorm", norm_eps=config.get("rms_norm_eps", 1e-6), mlp_class_name="LLaMAMLP",
                  rope_adjustments=_rope_adjustments(config.get("rope_scaling"), folder))
    if model_type == "olmo2":
        fields.update(norm_qk=True, norm_qk_type="olmo2", post_attention_norm=True, post_mlp_norm=True,
                      norm_1=False, norm_2=False)
    return Config(**fields)


def _rope_adjustments(scaling: dict | None, folder) -> dict | None:
    if not scaling:
        return None
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        raise InjcError(f"{str(folder)!r}: rope_scaling {scaling!r} has no LitGPT counterpart (llama3 only)")
    return {"factor": scaling["factor"], "low_freq_factor": scaling["low_freq_factor"],
            "high_freq_factor": scaling["high_freq_factor"],
            "original_max_seq_len": scaling["original_max_position_embeddings"]}


def _load_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def hf_to_litgpt(folder: str | Path, context: int | None = None):
    """(LitGPT Config, LitGPT state dict) of an HF folder, through LitGPT's convert_hf_checkpoint copiers."""
    from litgpt.scripts import convert_hf_checkpoint as hf2lit

    folder = Path(folder)
    hf_config = read_hf_config(folder)
    config, model_type = litgpt_config(hf_config, folder, folder.name, context), _model_type(hf_config, folder)
    copy = {"gpt_neox": partial(hf2lit.copy_weights_gpt_neox, config),
            "llama": partial(hf2lit.copy_weights_hf_llama, config, {}),
            "olmo2": partial(hf2lit.copy_weights_olmo2, config, {})}[model_type]
    state: dict = {}
    try:
        for path in weight_files(folder):
            copy(state, _load_weights(path))
    except KeyError as error:
        raise InjcError(f"{str(folder)!r}: weight {error} has no place in LitGPT's {model_type} model") from None
    return config, state


def hf_config_of(config) -> dict:
    """The transformers config (model_type and fields) of a LitGPT Config, or a clear error for what has none."""
    base = dict(vocab_size=config.padded_vocab_size, hidden_size=config.n_embd, num_hidden_layers=config.n_layer,
                num_attention_heads=config.n_head, intermediate_size=config.intermediate_size,
                max_position_embeddings=config.block_size, rope_theta=float(config.rope_base),
                tie_word_embeddings=False, torch_dtype="float32")
    unusual = [name for name, value in (("scale_embeddings", config.scale_embeddings),
                                        ("lm_head_bias", config.lm_head_bias), ("n_expert", config.n_expert),
                                        ("attn_bias", config.attn_bias), ("shared_attention_norm",
                                                                           config.shared_attention_norm),
                                        ("sliding_window_size", config.sliding_window_size),
                                        ("rope_condense_ratio", config.rope_condense_ratio != 1),
                                        ("final_logit_softcapping", config.final_logit_softcapping)) if value]
    neox = (config.mlp_class_name == "GptNeoxMLP" and config.norm_class_name == "LayerNorm" and config.bias
            and config.n_query_groups == config.n_head and config.head_size * config.n_head == config.n_embd
            and not (config.norm_qk or config.post_attention_norm or config.post_mlp_norm))
    llama_like = (config.mlp_class_name == "LLaMAMLP" and config.norm_class_name == "RMSNorm" and not config.bias
                  and config.rotary_percentage == 1.0 and not config.parallel_residual)
    olmo2 = llama_like and config.norm_qk and config.norm_qk_type == "olmo2" and config.post_attention_norm \
        and config.post_mlp_norm and not config.norm_1 and not config.norm_2
    llama = llama_like and not (config.norm_qk or config.post_attention_norm or config.post_mlp_norm)
    if unusual or not (neox or olmo2 or llama):
        raise InjcError(f"LitGPT config {config.name!r} ({config.mlp_class_name}, {config.norm_class_name}"
                        f"{', ' + ', '.join(unusual) if unusual else ''}) has no transformers counterpart here: "
                        f"{', '.join(CONVERTIBLE)} are converted")
    if neox:
        return dict(base, model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"],
                    rotary_pct=config.rotary_percentage, rotary_emb_base=config.rope_base,
                    layer_norm_eps=config.norm_eps, use_parallel_residual=config.parallel_residual,
                    hidden_act="gelu" if config.gelu_approximate == "none" else "gelu_pytorch_tanh",
                    attention_bias=True)
    rope = config.rope_adjustments
    fields = dict(base, num_key_value_heads=config.n_query_groups, head_dim=config.head_size,
                  rms_norm_eps=config.norm_eps, hidden_act="silu", attention_bias=False,
                  rope_scaling=None if not rope else {
                      "rope_type": "llama3", "factor": rope["factor"], "low_freq_factor": rope["low_freq_factor"],
                      "high_freq_factor": rope["high_freq_factor"],
                      "original_max_position_embeddings": rope["original_max_seq_len"]})
    if olmo2:
        return dict(fields, model_type="olmo2", architectures=["Olmo2ForCausalLM"])
    return dict(fields, model_type="llama", architectures=["LlamaForCausalLM"], mlp_bias=False)


def litgpt_to_hf(config, state: dict) -> tuple[dict, dict]:
    """(transformers config fields, HF state dict) of a LitGPT model, through LitGPT's convert_lit_checkpoint
    copiers. LitGPT 0.5's OLMo-2 copier names the post-attention norm `norm_2` (its HF→LitGPT twin writes
    `post_attention_norm`), so that key is renamed first."""
    from litgpt.scripts import convert_lit_checkpoint as lit2hf

    fields = hf_config_of(config)
    hf_state: dict = {}
    if fields["model_type"] == "olmo2":
        state = {key.replace(".post_attention_norm.", ".norm_2."): value for key, value in state.items()}
        lit2hf.copy_weights_olmo2(config, hf_state, state)
    elif fields["model_type"] == "llama":
        lit2hf.copy_weights_llama(config, hf_state, state)
    else:
        lit2hf.copy_weights_gpt_neox(config, hf_state, state)
    return fields, hf_state


def _replace(out: Path, written: Path) -> Path:
    """Put a fully written folder in place of `out` (whatever was there, with --force)."""
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    written.rename(out)
    return out


def save_hf_folder(out: Path, fields: dict, hf_state: dict, tokenizer: Path | None = None,
                   eos_token: str | None = None, train_state: Path | None = None) -> Path:
    """Write an HF folder that transformers loads (the state checked against the architecture, strictly), with
    the build's tokenizer when known (and its EOS as the model's bos/eos ids, which generation stops at: the
    architecture's defaults belong to another tokenizer) and injc's train_state.json (so `injc eval` still knows
    the steps done and the build); written beside `out` and renamed into place, so it is whole or absent."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(fields)
    if tokenizer is not None and tokenizer.is_file() and eos_token is not None:
        eos_id = Tokenizer.from_file(str(tokenizer)).token_to_id(eos_token)
        fields.update(bos_token_id=eos_id, eos_token_id=eos_id)
    model_type, architectures = fields.pop("model_type"), fields.pop("architectures")
    dtype = fields.pop("torch_dtype", "float32")
    hf_config = AutoConfig.for_model(model_type, architectures=architectures, **fields)
    model = AutoModelForCausalLM.from_config(hf_config)
    try:
        model.load_state_dict(hf_state, strict=True)
    except RuntimeError as error:
        raise InjcError(f"the converted weights do not fit transformers' {architectures[0]}: "
                        f"{str(error).splitlines()[0]}") from None
    model.tie_weights()
    partial_out = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(partial_out, ignore_errors=True)
    model.to(getattr(torch, dtype)).save_pretrained(partial_out)
    if tokenizer is not None and tokenizer.is_file():
        shutil.copyfile(tokenizer, partial_out / "tokenizer.json")
        (partial_out / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos_token, "model_max_length":
             hf_context(fields)}, indent=2) + "\n")
    if train_state is not None and train_state.is_file():
        shutil.copyfile(train_state, partial_out / "train_state.json")
    return _replace(out, partial_out)


NANOGPT_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
"""nanoGPT's nn.Linear layers that HF GPT-2 keeps as Conv1D, whose weights are stored transposed."""


def is_nanogpt_checkpoint(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix in (".pt", ".pth") and Path(path).name != "lit_model.pth"


def nanogpt_to_hf(path: str | Path) -> tuple[dict, dict]:
    """(GPT-2 config fields, HF state dict) of nanoGPT's ckpt.pt ({'model', 'model_args', ...} as its train.py
    saves it): the same names as HF GPT-2 once torch.compile's `_orig_mod.` prefix is gone, Linear weights
    transposed into Conv1D's layout, zero biases where nanoGPT trained without them (bias=False), exact GELU and
LayerNorm eps 1e-5 as nanoGPT's model.py computes them."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        args, weights = checkpoint["model_args"], checkpoint["model"]
    except Exception as error:  # torch's loader raises several types for a file that is not a checkpoint
        raise InjcError(f"{str(path)!r} is not a nanoGPT checkpoint ({error or type(error).__name__})") from None
    weights = {key.removeprefix("_orig_mod."): value for key, value in weights.items()
               if not key.endswith(".attn.bias")}  # the causal mask nanoGPT keeps without flash attention
    hf_state = {}
    for key, value in weights.items():
        layer = key.rsplit(".", 1)[0]
        hf_state[key] = value.t().contiguous() if layer.endswith(NANOGPT_LINEARS) and value.dim() == 2 else value
    for key, value in weights.items():
        if key.endswith(".weight") and key != "lm_head.weight" and "wte" not in key and "wpe" not in key:
            bias = key.removesuffix(".weight") + ".bias"
            hf_state.setdefault(bias, torch.zeros(value.shape[0], dtype=value.dtype))
    fields = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=args["vocab_size"],
                  n_positions=args["block_size"], n_embd=args["n_embd"], n_layer=args["n_layer"],
                  n_head=args["n_head"], activation_function="gelu", layer_norm_epsilon=1e-5,
                  tie_word_embeddings=True, torch_dtype="float32")
    return fields, hf_state


def build_tokenizer(manifest_path: str | Path | None) -> tuple[Path | None, str | None]:
    """(tokenizer.json, EOS token) of a build, for an HF folder that tools such as lm-evaluation-harness read."""
    from injc.shards.manifest import load_manifest

    if manifest_path is None or not Path(manifest_path).is_file():
        return None, None
    from tokenizers import Tokenizer

    manifest = load_manifest(manifest_path)
    path = manifest.root / manifest.data["tokenizer"]["path"]
    return path, Tokenizer.from_file(str(path)).id_to_token(manifest.data["layout"]["eos_id"])


def convert(source: str | Path, to: str, out: str | Path, manifest: str | Path | None = None,
            force: bool = False) -> Path:
    """A LitGPT checkpoint or nanoGPT ckpt.pt → an HF folder (to="hf"), or an HF folder → a LitGPT checkpoint
    (to="litgpt"). The HF folder gets the build's tokenizer: `manifest`'s, else the one train_state.json names."""
    from litgpt import Config
    from litgpt.utils import save_config

    source, out = Path(source), Path(out)
    if to not in (HF, LITGPT):
        raise InjcError(f"--to {to!r}: give hf or litgpt")
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise InjcError(f"--out {str(out)!r} exists and is not empty (--force replaces it)")
    if is_nanogpt_checkpoint(source):
        if to != HF:
            raise InjcError(f"{str(source)!r} is a nanoGPT (GPT-2) model: LitGPT has no GPT-2 architecture, "
                            f"convert it --to hf")
        return save_hf_folder(out, *nanogpt_to_hf(source), *build_tokenizer(manifest))
    kind = checkpoint_format(source, "CHECKPOINT")
    if kind == to:
        raise InjcError(f"{str(source)!r} is already a {'LitGPT checkpoint' if to == LITGPT else 'Hugging Face'} "
                        f"folder")
    if to == HF:
        config = Config.from_file(source / "model_config.yaml")
        state = torch.load(source / "lit_model.pth", map_location="cpu", weights_only=True)
        state_path = source / "train_state.json"
        manifest = manifest or (json.loads(state_path.read_text()).get("manifest") if state_path.is_file() else None)
        return save_hf_folder(out, *litgpt_to_hf(config, state.get("model", state)), *build_tokenizer(manifest),
                              state_path)
    config, state = hf_to_litgpt(source)
    partial_out = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(partial_out, ignore_errors=True)
    partial_out.mkdir(parents=True)
    torch.save(state, partial_out / "lit_model.pth")
    save_config(config, partial_out)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "train_state.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, partial_out / name)
    return _replace(out, partial_out)
