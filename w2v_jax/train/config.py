"""The training configuration: defaults, checks that run before anything compiles, a fingerprint.

A config file (configs/*.py) starts from `default_config()` and sets what its
experiment needs; `--config.section.key=value` overrides any field. `check_config`
names the first unknown key or invalid value; `resolve_config` also makes the paths absolute,
as a run records them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from w2v_jax import files
from w2v_jax.data import labels as L
from w2v_jax.models import ConfigError, Wav2Vec2Config
from w2v_jax.models.config import PRESETS
from w2v_jax.train.metrics import summarize_confusion

# Wav2Vec2Config fields a training run may set on top of the checkpoint or preset:
# regularisation and compute policy, never the architecture of a loaded checkpoint.
MODEL_SWITCHES = ("dtype", "scan_layers", "remat", "remat_policy", "final_norm_in_hidden_states",
                  "hidden_dropout", "activation_dropout",
                  "attention_dropout", "feat_proj_dropout", "layerdrop", "apply_spec_augment",
                  "mask_time_prob", "mask_time_length", "mask_time_min_masks",
                  "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks")
# A rate of 1 makes inverted dropout divide by zero: NaN gradients. The model allows [0, 1].
DROPOUT_RATES = tuple(name for name in MODEL_SWITCHES if name.endswith("_dropout"))
# The dev scores evaluation reports per task and as their mean over tasks: the floats of a
# confusion summary (frame counts, per-class lists and the matrix are not scores). Each is
# higher-is-better: the best checkpoint is the one with the largest.
SCORES = tuple(name for name, value in summarize_confusion(np.eye(2, dtype=np.int64)).items()
               if isinstance(value, float))
# Keys that change how a run is watched, not what it computes: left out of the fingerprint.
UNFINGERPRINTED = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                   "async_checkpoints", "allow_config_change", "max_eval_batches", "data.processes")


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
    c.data.processes = 0  # training batches read by this many worker processes; 0 = threads

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
    c.best_metric = "accuracy"  # dev frame accuracy, averaged over the tasks; see best_metric_choices
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


def best_metric_choices(tasks) -> list[str]:
    """What config.best_metric may name: a score's mean over the tasks, or one task's score."""
    return [*SCORES, *(f"{task}/{score}" for task in tasks for score in SCORES)]


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """config.model's Wav2Vec2Config fields that apply: all with init=random, else only the switches."""
    overrides = {k: v for k, v in config.model.to_dict().items() if k != "preset"}
    if config.init == "random":
        return overrides
    return {k: v for k, v in overrides.items() if k in MODEL_SWITCHES}


def check_config(config: ml_collections.ConfigDict, *, device_count: int | None = None,
                 process_count: int | None = None) -> None:
    """Raise ConfigError naming the first unknown key or invalid value.

    Batch sizes and the mesh are checked against `device_count` devices in `process_count`
    processes (default: what jax sees now).
    """
    _check_keys(config, default_config())
    c = config
    kind, _, directory = c.init.partition(":")
    if not (c.init == "random" or (kind in ("hf", "model") and directory)):
        _fail("init", c.init, "must be 'random', 'hf:DIR' or 'model:DIR' (DIR not empty)")
    if not (isinstance(c.seed, int) and 0 <= c.seed < 2**63 - 1):
        _fail("seed", c.seed, "must be an integer in [0, 2**63 - 1) (numpy refuses negative seeds)")
    if not c.tasks:
        _fail("tasks", dict(c.tasks), "needs at least one task")
    for task, weight in c.tasks.items():
        if task not in L.TASKS:
            raise ConfigError(f"config.tasks.{task}: unknown task; choose from {L.TASKS}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            _fail(f"tasks.{task}", weight, "a loss weight must be a finite number >= 0")
    for key in ("head_dropout", *(f"model.{name}" for name in DROPOUT_RATES)):
        if not 0 <= _get(c, key) < 1:
            _fail(key, _get(c, key), "a dropout rate must be in [0, 1) (1 makes every gradient NaN)")
    _check_model(c)
    if c.data.source not in ("corpus", "prepared"):
        _fail("data.source", c.data.source, "must be 'corpus' or 'prepared'")
    if not c.data.dir:
        _fail("data.dir", c.data.dir, "must name the corpus or the prepared dataset directory")
    for key in ("data.batch_size", "data.eval_batch_size", "data.num_buckets",
                "optimizer.grad_accum", "total_steps", "log_every", "eval_every",
                "checkpoint_every", "keep_checkpoints", "max_nonfinite"):
        if not (isinstance(_get(c, key), int) and _get(c, key) >= 1):
            _fail(key, _get(c, key), "must be a positive integer")
    check_processes(c.data.processes)
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
    _check_devices(c, jax.device_count() if device_count is None else device_count,
                   jax.process_count() if process_count is None else process_count)
    if c.best_metric not in best_metric_choices(c.tasks):
        _fail("best_metric", c.best_metric,
              f"must be a dev score of config.tasks, one of {best_metric_choices(c.tasks)}")


def _check_model(c: ml_collections.ConfigDict) -> None:
    model_keys = {"preset", *(f.name for f in dataclasses.fields(Wav2Vec2Config))}
    for key in c.model.keys():
        if key not in model_keys:
            raise ConfigError(f"config.model.{key}: unknown key; model keys are 'preset' and "
                              "Wav2Vec2Config fields")
    if c.model.preset not in PRESETS:
        _fail("model.preset", c.model.preset, f"choose from {sorted(PRESETS)}")
    if c.init != "random":  # a checkpoint brings its architecture: a set key would be ignored
        for key in c.model.keys():
            if key not in (*MODEL_SWITCHES, "preset"):
                _fail(f"model.{key}", c.model[key], f"is architecture, which init={c.init!r} "
                      f"brings; on a checkpoint only {list(MODEL_SWITCHES)} apply")
    overrides = model_overrides(c)
    try:  # on a checkpoint only the switches apply, and they are independent of the architecture
        Wav2Vec2Config.preset(c.model.preset, **overrides)
    except ConfigError as e:  # the model names its field; name the config key that set it
        message = str(e)
        for key in overrides:
            message = message.replace(f"Wav2Vec2Config.{key}=", f"config.model.{key}=")
        raise ConfigError(message) from None


def _check_devices(c: ml_collections.ConfigDict, device_count: int, process_count: int) -> None:
    m = c.mesh
    if device_count % (m.fsdp * m.tensor):
        raise ConfigError(f"config.mesh.fsdp={m.fsdp} x config.mesh.tensor={m.tensor} must divide "
                          f"the {device_count} devices")
    data = device_count // (m.fsdp * m.tensor) if m.data == -1 else m.data
    if data * m.fsdp * m.tensor != device_count:
        raise ConfigError(f"config.mesh.data={m.data} x fsdp={m.fsdp} x tensor={m.tensor} must be "
                          f"the {device_count} devices (data=-1 takes the devices left)")
    shards = data * m.fsdp  # a batch is split over the data and fsdp axes, and between processes
    for key in ("data.batch_size", "data.eval_batch_size"):
        if _get(c, key) % shards or _get(c, key) % process_count:
            _fail(key, _get(c, key), f"must divide by mesh data x fsdp = {data} x {m.fsdp} on "
                  f"{device_count} devices, and by the process count ({process_count})")


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The checked config a run records, with its directories absolute and checked to exist.

    Absolute paths keep a workdir usable from any working directory (export, evaluation).
    """
    check_config(config)
    resolved = config.copy_and_resolve_references()
    if config.init != "random":
        kind, _, directory = config.init.partition(":")
        if kind == "hf":
            files.local_only(directory, "config.init=hf: (a Hugging Face checkpoint)")
        resolved.init = f"{kind}:{files.absolute(directory)}"
    for key in ("dir", "alignments_dir"):
        if config.data[key]:  # alignments_dir "" means DIR/alignments
            if config.data.source == "corpus":
                files.local_only(config.data[key], f"config.data.{key} (a corpus read in memory)")
            resolved.data[key] = os.fspath(files.absolute(config.data[key]))
            if not files.path(resolved.data[key]).is_dir():
                _fail(f"data.{key}", config.data[key], f"no such directory ({resolved.data[key]})")
    return resolved




def _get(section, dotted: str):
    for part in dotted.split("."):
        section = section[part]
    return section


def check_processes(processes: Any) -> None:
    """config.data.processes, which fine-tuning and pre-training share."""
    if not (isinstance(processes, int) and processes >= 0):
        _fail("data.processes", processes, "must be an integer >= 0 (0: worker threads)")


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
