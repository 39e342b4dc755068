"""What a run keeps of its text side: the tokenizer saved with it, the text tower built from config.text,
and the text tower a CLIP run exports for a text-conditioned score model to use frozen.

Files in a run's workdir:

    tokenizer.json     the word vocabulary (data_sources.tokenizer.WordTokenizer), built from the training
                       captions on the run's first start and read back on every resume, so the ids of a
                       caption never change within a run (a vocabulary rebuilt from other data could reorder)
    text_tower.json    a CLIP run's exported text tower: its config.text fields, step and params digest ...
    text_tower.msgpack ... and its parameters (flax msgpack), written by tasks/clip.py after the last step

The tokenizer and tower a score model uses live in config.text.pretrained_dir when that names a CLIP run,
else in the score model's own workdir.
"""
from __future__ import annotations

import json
import os

import jax
from absl import logging
from flax import serialization

from data_sources.tokenizer import TokenizerError, WordTokenizer, load_tokenizer
from models.clip import TEXT_TOWERS
from models.clip_text import CLIPTextConfig
from models.prompt import PromptConditioning
from training.files import atomic_write_json, file_digest, tree_digest
from training.validation import ConfigError

TOKENIZER_FILE = "tokenizer.json"
TOWER_FILES = ("text_tower.json", "text_tower.msgpack")
TOWER_FIELDS = ("tower", "width", "layers", "heads")


def text_home(config, workdir: str) -> str:
    """Where the run's tokenizer (and, for a frozen tower, the tower) is: the CLIP run, or the run itself."""
    return config.text.pretrained_dir or workdir


def run_tokenizer(config, workdir: str, captions=None):
    """config.text.tokenizer when set; else the run's saved tokenizer.json; else (captions given, process 0
    writes) a word vocabulary built from `captions`, saved there. TokenizerError when there is none to read."""
    if config.text.tokenizer:
        return load_tokenizer(config.text.tokenizer, config.text.context_length)
    path = os.path.join(text_home(config, workdir), TOKENIZER_FILE)
    if os.path.isfile(path):
        return WordTokenizer.load(path)
    if captions is None or config.text.pretrained_dir:
        raise TokenizerError(f"{path} does not exist; train the run (--mode train) first, or set "
                             f"config.text.tokenizer to a tokenizer file or folder.")
    tokenizer = WordTokenizer.build(captions, context_length=config.text.context_length)
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tokenizer.save(path)
    logging.info("Word vocabulary of %d tokens built from %d training captions, saved to %s.",
                 tokenizer.vocab_size, len(captions), path)
    return tokenizer


def text_config(fields: dict, tokenizer) -> CLIPTextConfig:
    """The text transformer of config.text-like `fields` (width, layers, heads) over `tokenizer`'s ids."""
    return CLIPTextConfig(vocab_size=tokenizer.vocab_size, hidden_size=fields["width"],
                          intermediate_size=2 * fields["width"], num_hidden_layers=fields["layers"],
                          num_attention_heads=fields["heads"], max_position_embeddings=tokenizer.context_length,
                          hidden_act="gelu", bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                          pad_token_id=tokenizer.pad_id)


def tower_fields(config) -> dict:
    return {name: config.text[name] for name in TOWER_FIELDS}


def text_tower(fields: dict, tokenizer):
    """The flax text tower (models.clip.TEXT_TOWERS[fields['tower']]) of `fields` over `tokenizer`."""
    if fields["tower"] not in TEXT_TOWERS:
        raise ConfigError(f"config.text.tower={fields['tower']!r} must be one of {sorted(TEXT_TOWERS)}.")
    return TEXT_TOWERS[fields["tower"]](text_config(fields, tokenizer))


def export_tower(workdir: str, fields: dict, params, step: int) -> str:
    """Write a trained text tower's params and fields to workdir (process 0); the msgpack path."""
    meta_path, params_path = (os.path.join(workdir, name) for name in TOWER_FILES)
    if jax.process_index() == 0:
        with open(params_path + ".tmp", "wb") as f:
            f.write(serialization.msgpack_serialize(jax.device_get(params)))
        os.replace(params_path + ".tmp", params_path)
        atomic_write_json(meta_path, {**fields, "step": int(step), "params_digest": tree_digest(params)})
    return params_path


def load_tower(folder: str, tokenizer):
    """(module, params, record) of the text tower exported to `folder`; record names it for the checkpoints."""
    meta_path, params_path = (os.path.join(folder, name) for name in TOWER_FILES)
    if not (os.path.isfile(meta_path) and os.path.isfile(params_path)):
        raise ConfigError(f"config.text.pretrained_dir={folder!r} holds no exported text tower ({' + '.join(TOWER_FILES)}"
                          f"); train a CLIP pair there first (--config configs/clip/mnist_pairs.py --mode train).")
    with open(meta_path) as f:
        meta = json.load(f)
    with open(params_path, "rb") as f:
        params = serialization.msgpack_restore(f.read())
    record = {"text_tower": os.path.abspath(folder), "step": meta["step"], "digest": file_digest(params_path)}
    return text_tower(meta, tokenizer), params, record


def prompt_conditioning(config, workdir: str, captions=None):
    """(tokenizer, models.prompt.PromptConditioning, frozen params or None, frozen record) of a text-conditioned
    score model (config.text.conditional): a tower of config.text trained jointly, or the frozen one exported
    to config.text.pretrained_dir; the tokenizer as run_tokenizer gives it (built from `captions` on a first
    start). ConfigError when the model cannot take prompts."""
    m = config.model
    if m.name != "unet2d_condition" or m.num_classes:
        raise ConfigError(f"config.text.conditional needs config.model.name='unet2d_condition' (cross-attention on "
                          f"the prompt) and num_classes=0, got {m.name!r} and {m.num_classes}.")
    tokenizer = run_tokenizer(config, workdir, captions)
    if config.text.pretrained_dir:
        encoder, params, record = load_tower(config.text.pretrained_dir, tokenizer)
        frozen = {"text_model": params}
    else:
        encoder, frozen, record = text_tower(tower_fields(config), tokenizer), None, {}
    width = encoder.config.hidden_size
    if m.get("cross_attention_dim", 768) != width:
        raise ConfigError(f"config.model.cross_attention_dim={m.get('cross_attention_dim', 768)} must equal the text "
                          f"tower's width {width} (config.text.width, or the exported tower's).")
    return tokenizer, PromptConditioning(encoder, tokenizer("")[0], joint=frozen is None), frozen, record
