"""Hugging Face transformers models, by name: `hf/<hub name or local folder>` (the optional extra
mltrain[transformers]). Built untrained from the model's config.json (a folder written by
`save_pretrained`, read from the working directory when relative, or a hub model in the Hugging
Face cache, downloaded there when missing and online), as one of two kinds, `model.task`:

- causal_lm: a language model over token windows (B, T), trained on the `text` and `tokens`
  datasets where `gpt` is; logits (B, T, vocabulary), cut to the data's tokenizer when the
  model's embedding has more rows (a vocabulary padded to a multiple of 64, say);
- sequence_classification: a classifier of padded token sequences (an `hf` dataset's text
  column read through data.tokenizer); logits (B, outputs), its classifier sized to the data;
  refused on data with a target at each position (a language model's), on texts longer than
  its positions and on a tokenizer with more tokens than its embedding.

auto: causal_lm when the config.json names a causal language model class (`GPT2LMHeadModel`,
`LlamaForCausalLM`), else sequence_classification (a `BertForMaskedLM` checkpoint fine-tunes
into a classifier).

The module is the transformers model itself, so its parameters keep the names of its published
weights (`transformer.h.0.attn.c_attn.weight`): checkpoints, `train.freeze` and
`optimizer.groups` read them as the model's documentation writes them. Two hooks make it take
and give what every mltrain model does: token ids in (padding, PADDING, masked out with an
attention mask), a plain logits tensor out.

transformers is imported only when a config names one of these.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UserError
from ..registry import TOKENS, Component
from ..schema import ModelSection
from . import STORED_MODEL_FILES

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..data import DataSpec

TRANSFORMERS_PIP = 'pip install "mltrain[transformers]"'
CAUSAL_LM, SEQUENCE_CLASSIFICATION = "causal_lm", "sequence_classification"
HF_FAMILY_HELP = ("a Hugging Face transformers model (mltrain[transformers]), by hub name or save_pretrained folder "
                  "(hf/./folder): a causal language model on the text and tokens datasets, or a sequence "
                  "classifier of an hf dataset's text column (model.task)")
CAUSAL_CLASS_ENDINGS = ("ForCausalLM", "LMHeadModel")  # config.json architectures of causal language models
PATH_STARTS = ("/", "./", "../", "~")  # a name starting so is a folder, never a hub name


class HFModelConfig(ModelSection):
    task: Literal["auto", "causal_lm", "sequence_classification"] = "auto"
    """causal_lm (next-token logits; text and tokens datasets) | sequence_classification (an hf dataset's text column) | auto: causal_lm when config.json names a causal language model"""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UserError(f"hf/... models need the transformers library, which is not installed; {TRANSFORMERS_PIP}") \
            from None
    transformers.logging.set_verbosity_error()  # its advice on fresh heads and unused weights: we report our own
    return transformers


def offline() -> bool:
    """Whether the Hugging Face Hub may not be reached (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _where(name: str) -> str:
    """Where `name` was looked for, for a message."""
    from huggingface_hub.constants import HF_HUB_CACHE

    folder = Path(name).expanduser()
    if name.startswith(PATH_STARTS):
        return f"no folder {folder.resolve()}"
    return (f"no folder {folder.resolve()} and no hub model '{name}' in the Hugging Face cache ({HF_HUB_CACHE})"
            + ("; HF_HUB_OFFLINE is set, so nothing is downloaded" if offline() else ""))


def _weights_missing(name: str) -> str:
    """Where the weights of the hub model `name` were looked for, its config.json having been read."""
    from huggingface_hub.constants import HF_HUB_CACHE

    if offline():
        return (f"hub model '{name}' has its config.json in the Hugging Face cache ({HF_HUB_CACHE}) but not its "
                "weights, and HF_HUB_OFFLINE is set, so nothing is downloaded")
    return f"hub model '{name}' has no weights in the Hugging Face cache ({HF_HUB_CACHE}) that could be downloaded"


def model_config(name: str) -> Any:
    """The transformers config of the folder or hub model `name` (its config.json), or the one a
    checkpoint stored when the model is rebuilt from it."""
    transformers = _transformers()
    stored = (STORED_MODEL_FILES.get() or {}).get("config.json")
    if isinstance(stored, str):
        try:
            return transformers.AutoConfig.for_model(**json.loads(stored))
        except (ValueError, TypeError, KeyError) as error:
            raise UserError(f"model.arch hf/{name}: the checkpoint's stored config.json does not read "
                            f"({type(error).__name__}: {str(error)[:120]}); the file is damaged or was edited") from None
    folder = Path(name).expanduser()
    if folder.exists() and not (folder / "config.json").is_file():
        raise UserError(f"model.arch hf/{name}: {folder.resolve()} has no config.json; give a folder written by "
                        "save_pretrained, or a hub name")
    try:
        return transformers.AutoConfig.from_pretrained(str(folder) if folder.is_dir() else name)
    except (OSError, ValueError) as error:  # not there, not reachable, or not a config transformers knows
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        if name.startswith(PATH_STARTS):
            raise UserError(f"model.arch hf/{name}: cannot read its config.json: {_where(name)}; give a folder "
                            "written by save_pretrained") from None
        raise UserError(f"model.arch hf/{name}: cannot read its config.json: {_where(name)} ({detail}). Give a "
                        "folder written by save_pretrained, or download the model once online (`hf download "
                        f"{name}`)") from None


def default_task(config: Any) -> str:
    names = config.architectures or []
    return CAUSAL_LM if any(name.endswith(CAUSAL_CLASS_ENDINGS) for name in names) else SEQUENCE_CLASSIFICATION


def hf_component(name: str) -> Component:
    """At load, only what needs no file and no network: transformers is installed, and a name
    written as a path (/, ./, ../, ~) is a folder. Its config.json is read when the model is built,
    as data files and weights are read when they are used."""
    if not name:
        raise UserError("hf/: give a hub name or a local folder after hf/, e.g. hf/gpt2 or hf/./my-model")
    _transformers()
    folder = Path(name).expanduser()
    stored = "config.json" in (STORED_MODEL_FILES.get() or {})  # rebuilt from a checkpoint: the folder is not read
    if name.startswith(PATH_STARTS) and not folder.is_dir() and not stored:
        raise UserError(f"hf/{name}: no folder {folder.resolve()}; give a folder written by save_pretrained (a "
                        "relative one is read from the working directory), or a hub name")

    def build(input_shape: tuple[int, ...], num_outputs: int, task: str, spec: DataSpec | None = None) -> nn.Module:
        config = model_config(name)
        chosen = default_task(config) if task == "auto" else task
        if chosen == CAUSAL_LM:
            return causal_lm(name, config, input_shape, num_outputs)
        _refuse_targets_per_position(name, config, task, spec)
        return sequence_classifier(name, config, input_shape, num_outputs,
                                   spec.token_vocabulary if spec is not None else None)
    return Component(f"hf/{name}", f"Hugging Face transformers model {name}: a causal language model or a sequence "
                     "classifier (model.task)", build, HFModelConfig, frozenset({TOKENS}))


def causal_lm(name: str, config: Any, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """A causal language model reading (B, T) token ids, T <= block_size; returns (B, T,
    vocabulary) logits, `vocabulary` being num_outputs / block_size, the data's tokens."""
    (block_size,) = input_shape
    if num_outputs % block_size:
        raise UserError(f"model.arch hf/{name} is a causal language model (model.task), which predicts the next "
                        f"token at each of the {block_size} positions, but the data gives {num_outputs} outputs per "
                        "sample; train it on dataset text or tokens, or set model.task: sequence_classification")
    vocabulary = num_outputs // block_size
    text_config = _text_config(config)
    _refuse_more_tokens(name, text_config, vocabulary, "")
    _refuse_more_positions(name, text_config, block_size, "data.block_size")
    config.use_cache = False  # training and scoring read whole windows: no key/value cache to keep
    model = _transformers().AutoModelForCausalLM.from_config(config)
    return _with_plain_logits(model, vocabulary if vocabulary < text_config.vocab_size else None)


def sequence_classifier(name: str, config: Any, input_shape: tuple[int, ...], num_outputs: int,
                        vocabulary: int | None) -> nn.Module:
    """A classifier reading (B, L) token ids padded with PADDING, ids below `vocabulary` (the
    data's tokenizer's; None: not known, as when rebuilt from a checkpoint); returns (B,
    num_outputs) logits. Padding is masked out (attention_mask) and fed as the model's pad token,
    which decoders (GPT-2's classifier) use to find each sequence's last token: the config's own,
    else its end of sequence token, as transformers users set it."""
    text_config = _text_config(config)
    if vocabulary is not None:
        _refuse_more_tokens(name, text_config, vocabulary, ", or a bpe tokenizer of at most "
                            f"{text_config.vocab_size} tokens (data.vocab_size)")
    _refuse_more_positions(name, text_config, input_shape[0], "data.max_length")
    config.num_labels = num_outputs
    config.use_cache = False
    if config.pad_token_id is None:
        end = getattr(config, "eos_token_id", None)
        config.pad_token_id = (end[0] if isinstance(end, list) else end) if end is not None else 0
    model = _transformers().AutoModelForSequenceClassification.from_config(config)
    return _with_plain_logits(model, None, masked_with=config.pad_token_id)


def _text_config(config: Any) -> Any:
    """The part of `config` that reads tokens (a multimodal model's text model; else itself)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _refuse_targets_per_position(name: str, config: Any, task: str, spec: DataSpec | None) -> None:
    """A sequence classifier gives one class per text: data with a target at every position (a
    language model's) would make it a classifier of vocabulary x positions classes."""
    if spec is None or not spec.target_shape:
        return
    chosen = (f"model.task auto chose it: config.json names {', '.join(config.architectures or ['no class'])}, not "
              "a causal language model") if task == "auto" else f"model.task: {task}"
    raise UserError(f"model.arch hf/{name} is a sequence classifier ({chosen}), which gives one class per text, but "
                    f"the data has a target at each of its {spec.target_shape[0]} positions (a language model's data, "
                    "as the text and tokens datasets give); set model.task: causal_lm to train a language model, "
                    "or classify the texts of a column of an hf dataset (data.dataset: hf, data.input: the text "
                    "column, data.tokenizer)")


def _refuse_more_tokens(name: str, text_config: Any, vocabulary: int, other_remedy: str) -> None:
    if vocabulary > text_config.vocab_size:
        raise UserError(f"data.tokenizer: its {vocabulary} tokens are more than the {text_config.vocab_size} of "
                        f"hf/{name}'s embedding; read the text with the model's own tokenizer (data.tokenizer: the "
                        f"model's folder, or its tokenizer.json){other_remedy}")


def _refuse_more_positions(name: str, text_config: Any, length: int, key: str) -> None:
    positions = getattr(text_config, "max_position_embeddings", None)
    if isinstance(positions, int) and length > positions:
        raise UserError(f"{key} {length}: hf/{name} reads at most {positions} positions; give {key} {positions} "
                        "or less")


def _with_plain_logits(model: nn.Module, vocabulary: int | None, masked_with: int | None = None) -> nn.Module:
    """`model`, called with token ids alone, returning its logits alone (the first `vocabulary`
    of them when given); with `masked_with`, PADDING positions are masked and hold that id."""
    from ..data.tokenizer import PADDING

    def token_ids(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if not args:  # called with keywords, as transformers' own utilities call it: passed on as they are
            return args, kwargs
        tokens = args[0]
        if masked_with is None:
            return (), {**kwargs, "input_ids": tokens}
        present = tokens != PADDING  # (B, L)
        return (), {**kwargs, "input_ids": tokens.masked_fill(~present, masked_with),
                    "attention_mask": present.long()}

    def logits(module: nn.Module, args: tuple, output: Any) -> torch.Tensor:
        found = output.logits if hasattr(output, "logits") else output
        return found[..., :vocabulary] if vocabulary is not None else found

    model.register_forward_pre_hook(token_ids, with_kwargs=True)
    model.register_forward_hook(logits)
    return model


def is_hf(arch: str) -> bool:
    return arch.startswith("hf/")


def published_weights(arch: str, model: nn.Module) -> tuple[dict[str, Any], str]:
    """The published weights of hf/<name> that fit `model` (built from its config): the state
    dict of `from_pretrained`, less what it initialised fresh (a classifier the checkpoint does
    not hold, or holds for other classes), and where they came from."""
    transformers = _transformers()
    name = arch.removeprefix("hf/")
    folder = Path(name).expanduser()
    source = str(folder) if folder.is_dir() else name
    quiet = folder.is_dir() or offline()  # nothing to download: no progress bar for reading a local file
    if quiet:
        transformers.utils.logging.disable_progress_bar()
    try:
        loaded, info = type(model).from_pretrained(source, config=copy.deepcopy(model.config),
                                                   ignore_mismatched_sizes=True, output_loading_info=True)
    except (OSError, ValueError) as error:  # no weights in the folder, not cached and offline, refused
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        where, remedy = (f"{folder.resolve()} holds none transformers reads", "save the model there with "
                         "save_pretrained") if folder.is_dir() else (_weights_missing(name), f"download them once "
                                                                       f"online (`hf download {name}`)")
        raise UserError(f"model.weights: pretrained: the weights of hf/{name} could not be read: {where} ({detail}); "
                        f"{remedy}, or set model.weights: null to start from random weights") from None
    finally:
        if quiet:
            transformers.utils.logging.enable_progress_bar()
    fresh = set(info.get("missing_keys") or ()) | {
        key[0] if isinstance(key, (tuple, list)) else key for key in info.get("mismatched_keys") or ()}
    state = {key: value for key, value in loaded.state_dict().items() if key not in fresh}
    return state, str(folder.resolve()) if folder.is_dir() else f"{name} in the Hugging Face cache"
