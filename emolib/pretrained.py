"""Pre-trained weights from the hub or a local folder, loaded so that weights that do not fit fail.

transformers fills every weight a checkpoint lacks with a fresh random initialisation and says so
only in a log report (its "LOAD REPORT" table), which emolib keeps quiet (``emolib/__init__.py``:
otherwise a notebook's log fills with pre-training weights that are rightly left out). A folder
saved from another architecture, or with renamed keys, would then train a randomly initialised encoder without a word,
and a folder whose weights do not match the shapes of its ``config.json`` fails with "look at the
above report" and no report. :func:`load_model` names the folder and the weights instead.

Left out without a word (the other direction): weights in the checkpoint that the model has no
place for, such as wav2vec 2.0's quantiser and ``project_q`` (pre-training heads), Whisper's
``proj_out`` or BERT's masked-language-model head: the encoder does not use them.
"""
from __future__ import annotations

#: Weights a checkpoint may lack without harm: BERT's pooler (the teachers pool the last hidden
#: states themselves, see teachers.py; sentence-transformers folders are saved without it) and the
#: speech models' ``masked_spec_embed``, the vector SpecAugment writes into masked frames while
#: fine-tuning, which fine-tuning recipes initialise afresh when a checkpoint has none.
UNUSED_IF_MISSING = ("pooler.", "masked_spec_embed")

SHOWN = 3  # weights named in an error; the count says how many more


class ModelError(ValueError):
    """A model a setting names cannot be used as given: a family emolib does not support, weights
    that do not fit their config, a folder that does not exist. The commands print it as one
    ``error:`` line, not a traceback: exit 2 for the student's backbone (checked before anything
    trains), exit 1 where it is met later (a teacher's text model)."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model named as a path (absolute, or starting with ``~`` or ``.``) that is not a folder."""


def _some(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def _damaged(source: str) -> str:
    """The weights files of the folder ``source`` that safetensors cannot open (``source`` itself if
    none is found, such as a hub id's)."""
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    bad = []
    for path in sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []:
        try:
            with safe_open(path, "pt"):
                pass
        except SafetensorError:
            bad.append(str(path))
    return ", ".join(bad) or source


def load_model(source: str):
    """``AutoModel.from_pretrained(source)`` in fp32, refusing a checkpoint that lacks weights the
    model uses or holds them in other shapes (:class:`ModelError` naming ``source`` and the weights).

    fp32 whatever dtype the checkpoint was saved in: transformers 5 loads the saved dtype
    (``dtype="auto"``), and a float16 folder (``openai/whisper-large-v3``, a half model saved
    again) would fail on fp32 audio or train half-precision weights; bf16 runs under autocast."""
    from safetensors import SafetensorError
    from transformers import AutoModel

    try:
        # shapes that differ are reported below, by name, instead of transformers' error pointing at its report
        model, info = AutoModel.from_pretrained(source, output_loading_info=True, ignore_mismatched_sizes=True)
    except SafetensorError as err:  # a damaged weights file: "header too large", naming no file
        raise ModelError(f"{_damaged(source)}: not a readable safetensors file ({err}). Save the folder again with "
                         "save_pretrained, or copy it again") from None
    missing = [k for k in info["missing_keys"] if not k.startswith(UNUSED_IF_MISSING)]
    # (name, saved shape, shape of the config's model)
    mismatched = [f"{k} saved {tuple(saved)}, config {tuple(shape)}" for k, saved, shape in info["mismatched_keys"]]
    problems = []
    if missing:
        total = len(model.state_dict())
        problems.append(f"{len(missing)} of the model's {total} weights are not in the checkpoint ({_some(missing)}): "
                        "they would start random")
    if mismatched:
        problems.append(f"{len(mismatched)} weights have other shapes than its config.json gives ({_some(mismatched)})")
    if problems:
        raise ModelError(f"{source}: the saved weights do not fit the {type(model).__name__} its config.json describes: "
                         + "; ".join(problems) + ". Save the folder again with save_pretrained from the model itself")
    return model.float()
