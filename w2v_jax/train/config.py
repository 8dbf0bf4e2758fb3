"""The training configuration: defaults, checks that run before anything compiles, a fingerprint.

A config file (configs/*.py) starts from `default_config()` and sets what its
experiment needs; `--config.section.key=value` overrides any field. `check_config`
names the first unknown key or invalid value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import ml_collections

from w2v_jax.data import labels as L
from w2v_jax.models import ConfigError, Wav2Vec2Config

# Wav2Vec2Config fields a training run may set on top of the checkpoint or preset:
# regularisation and compute policy, never the architecture of a loaded checkpoint.
MODEL_SWITCHES = ("dtype", "scan_layers", "remat", "hidden_dropout", "activation_dropout",
                  "attention_dropout", "feat_proj_dropout", "layerdrop", "apply_spec_augment",
                  "mask_time_prob", "mask_time_length", "mask_time_min_masks",
                  "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks")
# Keys that change how a run is watched, not what it computes: left out of the fingerprint.
UNFINGERPRINTED = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                   "async_checkpoints", "allow_config_change", "max_eval_batches")


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # "random" (architecture from model.preset), "hf:DIR" (a transformers checkpoint)
    # or "model:DIR" (our model directory, as launch.convert or export_backbone write it).
    c.init = "random"

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # only for init=random
    defaults = Wav2Vec2Config()
    for name in MODEL_SWITCHES:
        setattr(c.model, name, getattr(defaults, name))

    c.data = ml_collections.ConfigDict()
    c.data.source = "corpus"  # "corpus": an AISHELL-1-layout corpus read into memory; "prepared": TFDS
    c.data.dir = ""
    c.data.alignments_dir = ""  # corpus only; "" = DIR/alignments
    c.data.train_split = "train"
    c.data.eval_split = "dev"
    c.data.batch_size = 8  # global, per micro-batch
    c.data.eval_batch_size = 8  # global
    c.data.num_buckets = 8  # padded lengths; each is one more compiled program

    c.tasks = ml_collections.ConfigDict({"tone": 1.0})  # task -> loss weight
    c.head_dropout = 0.0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # "adam" (L2 added to the gradient) or "adamw" (decoupled decay)
    c.optimizer.learning_rate = 5e-5  # peak
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.98
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_norm = 0.0  # global-norm clipping; 0 = off
    c.optimizer.grad_accum = 1  # micro-batches per update
    c.optimizer.warmup_ratio = 0.1  # fairseq tri-stage: warmup / hold / decay fractions of total_steps
    c.optimizer.hold_ratio = 0.4
    c.optimizer.decay_ratio = 0.5
    c.optimizer.init_scale = 0.01
    c.optimizer.final_scale = 0.05

    c.total_steps = 100_000
    c.freeze_steps = 10_000  # phase 1: heads only
    c.freeze_feature_encoder = True  # phase 2 leaves the CNN as it is

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})

    c.log_every = 50
    c.eval_every = 1000
    c.max_eval_batches = 0  # 0 = the whole eval split
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3  # the latest N, plus the best by best_metric
    c.best_metric = "accuracy"  # dev frame accuracy, averaged over the tasks
    c.async_checkpoints = True
    c.max_nonfinite = 10  # this many non-finite steps in a row stop the run
    c.allow_config_change = False  # resume a workdir whose checkpoint has another fingerprint
    return c


def _fail(key: str, value: Any, why: str):
    raise ConfigError(f"config.{key}={value!r}: {why}")


def _check_keys(config, reference, prefix: str = "") -> None:
    for key in config.keys():
        name = f"{prefix}{key}"
        if key not in reference:
            raise ConfigError(f"config.{name}: unknown key; known keys here: {sorted(reference.keys())}")
        if isinstance(reference[key], ml_collections.ConfigDict) and name not in ("tasks", "model"):
            if not isinstance(config[key], ml_collections.ConfigDict):
                _fail(name, config[key], "must be a section")
            _check_keys(config[key], reference[key], f"{name}.")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError naming the first unknown key or invalid value."""
    _check_keys(config, default_config())
    c = config
    if not (c.init == "random" or c.init.startswith(("hf:", "model:"))):
        _fail("init", c.init, "must be 'random', 'hf:DIR' or 'model:DIR'")
    if not c.tasks:
        _fail("tasks", dict(c.tasks), "needs at least one task")
    for task, weight in c.tasks.items():
        if task not in L.TASKS:
            raise ConfigError(f"config.tasks.{task}: unknown task; choose from {L.TASKS}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            _fail(f"tasks.{task}", weight, "a loss weight must be a finite number >= 0")
    model_keys = {"preset", *(f.name for f in dataclasses.fields(Wav2Vec2Config))}
    for key in c.model.keys():
        if key not in model_keys:
            raise ConfigError(f"config.model.{key}: unknown key; model keys are 'preset' and "
                              "Wav2Vec2Config fields")
    if c.data.source not in ("corpus", "prepared"):
        _fail("data.source", c.data.source, "must be 'corpus' or 'prepared'")
    if not c.data.dir:
        _fail("data.dir", c.data.dir, "must name the corpus or the prepared dataset directory")
    for key in ("data.batch_size", "data.eval_batch_size", "data.num_buckets",
                "optimizer.grad_accum", "total_steps", "log_every", "eval_every",
                "checkpoint_every", "keep_checkpoints", "max_nonfinite"):
        if not (isinstance(_get(c, key), int) and _get(c, key) >= 1):
            _fail(key, _get(c, key), "must be a positive integer")
    if not (isinstance(c.freeze_steps, int) and 0 <= c.freeze_steps <= c.total_steps):
        _fail("freeze_steps", c.freeze_steps, f"must be in [0, total_steps={c.total_steps}]")
    if c.checkpoint_every % c.eval_every:
        _fail("checkpoint_every", c.checkpoint_every,
              f"must be a multiple of eval_every={c.eval_every}, so every checkpoint has a dev score")
    if c.max_eval_batches < 0:
        _fail("max_eval_batches", c.max_eval_batches, "must be >= 0 (0 = all)")
    o = c.optimizer
    if o.name not in ("adam", "adamw"):
        _fail("optimizer.name", o.name, "must be 'adam' or 'adamw'")
    for key in ("learning_rate", "eps", "init_scale", "final_scale"):
        if not _get(o, key) > 0:
            _fail(f"optimizer.{key}", _get(o, key), "must be > 0")
    for key in ("b1", "b2"):
        if not 0 <= _get(o, key) < 1:
            _fail(f"optimizer.{key}", _get(o, key), "must be in [0, 1)")
    for key in ("weight_decay", "clip_norm", "warmup_ratio", "hold_ratio", "decay_ratio"):
        if not _get(o, key) >= 0:
            _fail(f"optimizer.{key}", _get(o, key), "must be >= 0")
    if abs(o.warmup_ratio + o.hold_ratio + o.decay_ratio - 1.0) > 1e-6:
        _fail("optimizer.warmup_ratio", o.warmup_ratio,
              "warmup_ratio + hold_ratio + decay_ratio must be 1")
    for axis in ("data", "fsdp", "tensor"):
        if not (c.mesh[axis] >= 1 or (axis == "data" and c.mesh[axis] == -1)):
            _fail(f"mesh.{axis}", c.mesh[axis], "must be >= 1 (data may be -1: the devices left)")
    if c.best_metric != "accuracy" and c.best_metric.split("/")[0] not in c.tasks:
        _fail("best_metric", c.best_metric, "must be 'accuracy' (mean over tasks) or '<task>/accuracy'")


def _get(section, dotted: str):
    for part in dotted.split("."):
        section = section[part]
    return section


def fingerprint_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The flattened config without the keys that only change how a run is watched."""
    return {k: v for k, v in _flatten(config.to_dict()).items() if k not in UNFINGERPRINTED}


def fingerprint(config: ml_collections.ConfigDict) -> str:
    """A hash of what the run computes; runs with equal fingerprints may resume each other."""
    text = json.dumps(fingerprint_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
