"""wav2vec 2.0 pre-training (the Task of w2v_jax.train.task) on unlabelled audio, as fairseq does it.

    from w2v_jax.train.pretraining import pretrain_config, run_pretraining
    config = pretrain_config(); config.data.dir = "corpus"; ...
    summary = run_pretraining(config, "runs/pretrain")  # exports WORKDIR/model at the end

One phase: every parameter trains, the CNN too, its gradient scaled by
objective.feature_grad_mult (fairseq). The loss is w2v_jax.pretrain.loss_fn's, divided by the
masked frames of the whole accumulated batch. Span masks and distractors are drawn on the host
from np.random.default_rng((seed, epoch, batch, process)), the position of the batch in the data
plan, so a resumed run draws the same ones; dev masks from (seed, batch, process), the same at
every evaluation so dev numbers compare across evaluations. The Gumbel temperature follows the
update step. The span masks replace SpecAugment's time masks (the model skips those when given
masks); config.model.mask_feature_prob (0 in fairseq's recipes) would add channel masks. The
exported config keeps apply_spec_augment=True, as transformers needs to apply given masks.

Train metrics: loss, contrastive_loss (mean cross-entropy per masked frame), diversity_loss
((GV - PPL) / GV), feature_penalty, accuracy, prob_perplexity/g<i> and code_perplexity/g<i>
(per group), temperature, masked_frames; the loop adds grad_norm and learning_rate. Dev: the
same with deterministic (argmax) codes, and a warning when a group's code perplexity falls
below config.collapse_fraction of its codewords.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from w2v_jax import checkpoint, files, pretrain, sharding
from w2v_jax.data import espeak
from w2v_jax.data.audio import SAMPLE_RATE
from w2v_jax.data.unlabelled import AudioBatches, AudioFiles, audio_files
from w2v_jax.models import ConfigError, Wav2Vec2Config
from w2v_jax.models.config import PRESETS
from w2v_jax.models.pretraining import PretrainingConfig, Wav2Vec2ForPreTraining
from w2v_jax.train import loop
from w2v_jax.train import step as S
from w2v_jax.train.checkpoints import Checkpoints, abstract, run_config
from w2v_jax.train.metrics import METRICS_FILE
from w2v_jax.train.config import _check_devices, _check_keys, check_processes, default_config

ALL = "all"  # the one optimizer group
MODEL_DIR = "model"  # the exported pre-training model, in the workdir
DATA_FILE = "pretraining_data.json"  # what the run read: files and hours per split
MODEL_CONFIG_FILE = "model_config.json"
TRAINING_FILE = "training.json"  # in an exported model directory: how the model was trained
CURVES = "curves"  # ... and its training curves (curves.png, curves.svg)
BATCH_KEYS = ("input_values", "attention_mask", "mask_time_indices", "negative_frames")
_LOOP_KEYS = ("optimizer", "mesh", "log_every", "eval_every", "max_eval_batches",
              "checkpoint_every", "keep_checkpoints", "async_checkpoints", "max_nonfinite",
              "allow_config_change", "seed", "total_steps")


def pretrain_config() -> ml_collections.ConfigDict:
    """Defaults: fairseq's Base recipe (wav2vec2_base_librispeech.yaml) where it applies."""
    loop_defaults = default_config()
    c = ml_collections.ConfigDict()
    for key in _LOOP_KEYS:
        c[key] = loop_defaults[key]
    c.total_steps = 400_000
    c.model = ml_collections.ConfigDict({"preset": "base"})  # + any Wav2Vec2Config field
    c.pretraining = ml_collections.ConfigDict(dataclasses.asdict(PretrainingConfig()))
    c.objective = ml_collections.ConfigDict(dataclasses.asdict(pretrain.Objective()))

    c.data = ml_collections.ConfigDict()
    c.data.dir = ""  # a folder of wav/flac files (recursive), or an AISHELL-layout corpus
    c.data.eval_fraction = 0.02  # dev share of a plain folder (a corpus has its own dev split)
    c.data.batch_size = 8  # global, per micro-batch
    c.data.eval_batch_size = 8
    c.data.num_buckets = 8
    c.data.max_seconds = 15.625  # random crops (fairseq's max_sample_size 250000)
    c.data.min_seconds = 2.0  # shorter files are left out (min_sample_size 32000)
    c.data.normalize = True  # zero mean, unit variance per file, as fine-tuning reads audio
    c.data.processes = 0  # training batches read by this many worker processes; 0 = threads

    o = c.optimizer
    o.name, o.learning_rate, o.eps, o.weight_decay = "adamw", 5e-4, 1e-6, 0.01
    o.warmup_ratio, o.hold_ratio, o.decay_ratio = 0.08, 0.0, 0.92
    c.best_metric = "loss"  # dev loss (lower is better) or "accuracy"
    c.collapse_fraction = 0.1  # warn when a group's dev code perplexity < this x its codewords
    return c


def _fail(key: str, value: Any, why: str):
    raise ConfigError(f"config.{key}={value!r}: {why}")


def model_config(c: ml_collections.ConfigDict) -> Wav2Vec2Config:
    """The backbone: config.model's preset and its fields."""
    fields = {k: v for k, v in c.model.items() if k != "preset"}
    if c.model.preset not in PRESETS:
        _fail("model.preset", c.model.preset, f"choose from {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(Wav2Vec2Config)}
    for key in fields:
        if key not in known:
            raise ConfigError(f"config.model.{key}: unknown key; model keys are 'preset' and "
                              "Wav2Vec2Config fields")
    preset = dataclasses.asdict(Wav2Vec2Config.preset(c.model.preset))
    return _named("model", Wav2Vec2Config, {**preset, **fields})


def _named(section: str, cls, values: dict):
    """cls(**values), its ConfigError naming the config key."""
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(str(e).replace(f"{cls.__name__}.", f"config.{section}.")) from None


def check_pretrain_config(c: ml_collections.ConfigDict) -> None:
    """Raise ConfigError naming the first unknown key or invalid value."""
    _check_keys(c, pretrain_config())
    cfg = model_config(c)
    _named("pretraining", PretrainingConfig, c.pretraining.to_dict())
    objective = _named("objective", pretrain.Objective, c.objective.to_dict())
    if not cfg.apply_spec_augment:  # our model masks anyway; transformers would not
        _fail("model.apply_spec_augment", False, "must be True: transformers applies the span "
              "masks only then (time masking is the span masks; mask_feature_prob adds channels)")
    if not c.data.dir:
        _fail("data.dir", c.data.dir, "must name a folder of wav/flac files or a corpus")
    for key in ("data.batch_size", "data.eval_batch_size", "data.num_buckets", "total_steps",
                "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "max_nonfinite", "optimizer.grad_accum"):
        value = c[key.split(".")[0]][key.split(".")[1]] if "." in key else c[key]
        if not (isinstance(value, int) and value >= 1):
            _fail(key, value, "must be a positive integer")
    if c.checkpoint_every % c.eval_every:
        _fail("checkpoint_every", c.checkpoint_every,
              f"must be a multiple of eval_every={c.eval_every}, so every checkpoint has a dev score")
    check_processes(c.data.processes)
    min_frames = cfg.num_frames(int(c.data.min_seconds * SAMPLE_RATE))
    if min_frames < 2 * objective.mask_length:  # two masked spans, so every row has distractors
        _fail("data.min_seconds", c.data.min_seconds,
              f"gives {min_frames} frames; at least 2 x objective.mask_length are needed")
    if not c.data.max_seconds >= c.data.min_seconds:
        _fail("data.max_seconds", c.data.max_seconds, "must be >= data.min_seconds")
    if not 0 <= c.data.eval_fraction < 1:
        _fail("data.eval_fraction", c.data.eval_fraction, "must be in [0, 1)")
    if c.optimizer.name not in ("adam", "adamw"):
        _fail("optimizer.name", c.optimizer.name, "must be 'adam' or 'adamw'")
    o = c.optimizer
    if abs(o.warmup_ratio + o.hold_ratio + o.decay_ratio - 1.0) > 1e-6:
        _fail("optimizer.warmup_ratio", o.warmup_ratio,
              "warmup_ratio + hold_ratio + decay_ratio must be 1")
    if c.best_metric not in ("loss", "accuracy"):
        _fail("best_metric", c.best_metric, "must be 'loss' or 'accuracy'")
    if not 0 <= c.collapse_fraction < 1:
        _fail("collapse_fraction", c.collapse_fraction, "must be in [0, 1)")
    _check_devices(c, jax.device_count(), jax.process_count())


def resolve_pretrain_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    check_pretrain_config(config)
    resolved = config.copy_and_resolve_references()
    resolved.data.dir = os.path.abspath(files.local_only(config.data.dir, "config.data.dir (audio)"))
    if not os.path.isdir(resolved.data.dir):
        _fail("data.dir", config.data.dir, f"no such directory ({resolved.data.dir})")
    return resolved


class MaskedBatches:
    """Audio batches with the span masks and distractors of the batch's position in the plan."""

    def __init__(self, audio: AudioBatches, cfg: Wav2Vec2Config, objective: pretrain.Objective,
                 seed: int, process_index: int):
        self.audio, self.cfg, self.objective = audio, cfg, objective
        self.seed, self.process_index = seed, process_index

    def __next__(self) -> dict[str, np.ndarray]:
        position = self.audio.get_state()
        batch = next(self.audio)
        rng = np.random.default_rng((self.seed, position["epoch"], position["step"], self.process_index))
        return with_masks(batch, rng, self.cfg, self.objective)

    def get_state(self) -> dict:
        return self.audio.get_state()

    def set_state(self, state: dict) -> None:
        self.audio.set_state(state)

    def close(self) -> None:
        self.audio.close()


def with_masks(batch: Mapping[str, np.ndarray], rng: np.random.Generator, cfg: Wav2Vec2Config,
               objective: pretrain.Objective) -> dict[str, np.ndarray]:
    """The model inputs of `batch` with mask_time_indices (B, T) and negative_frames (B, T, K):
    the distractors' frames within their row. Rows, not flat indices, since a row's place in
    the global batch (other processes' rows come before it) is only known under jit."""
    rows, samples = batch["input_values"].shape
    frames = int(cfg.num_frames(samples))
    real = np.maximum(cfg.num_frames(batch["attention_mask"].sum(1)), 0)
    sampled = pretrain.sample_batch(rng, real, frames, objective)
    offsets = (np.arange(rows) * frames)[:, None, None]
    return {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"],
            "mask_time_indices": sampled["mask_time_indices"],
            "negative_frames": (sampled["sampled_negative_indices"] - offsets).astype(np.int32)}


def flat_negatives(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """`batch` with pretrain's sampled_negative_indices (B, T, K): row * T + frame."""
    rows, frames, _ = batch["negative_frames"].shape
    flat = batch["negative_frames"] + (jnp.arange(rows, dtype=jnp.int32) * frames)[:, None, None]
    return {**batch, "sampled_negative_indices": flat}


class PreTraining:
    """The Task: Wav2Vec2ForPreTraining on unlabelled audio (see the module docstring)."""

    num_phases = 1

    def __init__(self, config: ml_collections.ConfigDict, *, saved: bool = False):
        """`saved`: the config a run recorded (run_config), taken as it is: no device or data
        checks, since the run may have had another mesh and its audio may be gone."""
        self.config = config if saved else resolve_pretrain_config(config)
        c = self.config
        self.model_config = model_config(c)
        self.pretraining = PretrainingConfig(**c.pretraining.to_dict())
        self.objective = pretrain.Objective(**c.objective.to_dict())
        self.max_samples = int(c.data.max_seconds * SAMPLE_RATE)
        self.min_samples = int(c.data.min_seconds * SAMPLE_RATE)

    # -- the run ---------------------------------------------------------------------------
    def prepare(self, workdir: files.PathLike, resuming: bool) -> None:
        c = self.config.data
        self.train_files, self.eval_files = (
            audio_files(c.dir, split, eval_fraction=c.eval_fraction, min_samples=self.min_samples)
            for split in ("train", "dev"))

    def run_files(self) -> dict[str, Any]:
        def described(files: AudioFiles):
            return {"source": files.source, "files": len(files),
                    "hours": round(float(files.lengths.sum()) / SAMPLE_RATE / 3600, 3)}
        return {DATA_FILE: {"train": described(self.train_files), "dev": described(self.eval_files)},
                MODEL_CONFIG_FILE: self.model_config.to_dict()}

    def build_model(self, *, abstract: bool) -> Wav2Vec2ForPreTraining:
        make = lambda: Wav2Vec2ForPreTraining(self.model_config, self.pretraining,
                                              rngs=nnx.Rngs(self.config.seed))
        return nnx.eval_shape(make) if abstract else make()

    def export(self, model: Wav2Vec2ForPreTraining, workdir: files.PathLike) -> None:
        """The pre-training model as a model directory (checkpoint.load_pretraining_model; its
        backbone is a fine-tuning init: config.init=model:WORKDIR/model)."""
        target = files.path(workdir) / MODEL_DIR
        if checkpoint.is_saved(target):
            logging.info("%s exists; not exporting again", target)
            return
        checkpoint.save_model(model, target, lambda into: write_training_record(workdir, into))
        logging.info("exported the pre-trained model to %s", target)

    # -- the optimizer: one phase, everything trains ----------------------------------------------
    def phase(self, step: int) -> int:
        return 0

    def groups(self, phase: int) -> tuple[str, ...]:
        return (ALL,)

    def param_label(self, path: tuple[str, ...], phase: int) -> str:
        return ALL

    # -- data ----------------------------------------------------------------------------------
    def _audio(self, files: AudioFiles, batch_size: int, train: bool) -> AudioBatches:
        c = self.config
        # Evaluation passes keep threads: each pass would start its own worker processes.
        return AudioBatches(files, self.model_config, batch_size=batch_size, train=train,
                            seed=c.seed, max_samples=self.max_samples,
                            process_index=jax.process_index(), process_count=jax.process_count(),
                            num_buckets=c.data.num_buckets, normalize=c.data.normalize,
                            processes=c.data.processes if train else 0)

    def train_batches(self, batch_size: int) -> MaskedBatches:
        return MaskedBatches(self._audio(self.train_files, batch_size, train=True),
                             self.model_config, self.objective, self.config.seed, jax.process_index())

    def eval_batches(self, batch_size: int):
        audio = self._audio(self.eval_files, batch_size, train=False)
        try:
            for i, batch in enumerate(audio):
                rng = np.random.default_rng((self.config.seed, i, jax.process_index()))
                yield with_masks(batch, rng, self.model_config, self.objective)
        finally:
            audio.close()

    def stack(self, micro_batches: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """(accum, batch, ...) arrays, each micro-batch padded to the longest (padding frames
        are unmasked; their distractors point at themselves and are ignored)."""
        samples = max(b["input_values"].shape[1] for b in micro_batches)
        frames = int(self.model_config.num_frames(samples))

        def pad(x, width, value=0):
            widths = [(0, 0)] * x.ndim
            widths[1] = (0, width - x.shape[1])
            return np.pad(x, widths, constant_values=value)

        padded = []
        for b in micro_batches:
            negatives = b["negative_frames"]
            extra = np.broadcast_to(np.arange(negatives.shape[1], frames)[None, :, None],
                                    (negatives.shape[0], frames - negatives.shape[1], negatives.shape[2]))
            padded.append({"input_values": pad(b["input_values"], samples),
                           "attention_mask": pad(b["attention_mask"], samples),
                           "mask_time_indices": pad(b["mask_time_indices"], frames, False),
                           "negative_frames": np.concatenate([negatives, extra], axis=1)})
        return {k: np.stack([p[k] for p in padded]) for k in BATCH_KEYS}

    # -- loss and evaluation (under jit) ----------------------------------------------------------
    def normalizers(self, batch):
        return jnp.maximum(jnp.sum(batch["mask_time_indices"]).astype(jnp.float32), 1.0)

    def loss(self, model, batch, normalizers, step):
        loss_sum, count, terms = pretrain.loss_fn(model, flat_negatives(batch), step, self.objective)
        weight = count / normalizers  # this micro-batch's share of the masked frames
        metrics = {"contrastive_loss": terms["contrastive_loss"] / normalizers,
                   "diversity_loss": terms["diversity_loss"] / normalizers,
                   "feature_penalty": terms["feature_penalty"] * weight,
                   "accuracy": terms["correct"] / normalizers,
                   "temperature": terms["temperature"] * weight,
                   "masked_frames": count}
        for kind in ("prob", "code"):
            for g in range(self.pretraining.num_codevector_groups):
                metrics[f"{kind}_perplexity/g{g}"] = terms[f"{kind}_perplexity_per_group"][g] * weight
        return loss_sum / normalizers, metrics

    def eval_stats(self, model, batch):
        batch = flat_negatives(batch)
        terms = pretrain.pretraining_loss(
            model, batch["input_values"], batch["attention_mask"], batch["mask_time_indices"],
            batch["sampled_negative_indices"], objective=self.objective, deterministic=True)
        count = terms["num_masked"]
        return {"loss_sum": terms["loss_sum"], "num_masked": count,
                "contrastive": terms["contrastive_loss"], "correct": terms["correct"],
                "code_perplexity": terms["code_perplexity_per_group"] * count,
                "prob_perplexity": terms["prob_perplexity_per_group"] * count}

    def summarize(self, stats) -> dict[str, Any]:
        """Dev loss, contrastive loss and accuracy per masked frame; each group's perplexities
        (the mean over eval batches weighted by masked frames); a warning on collapse."""
        count = max(float(stats["num_masked"]), 1.0)
        dev = {"dev/loss": float(stats["loss_sum"]) / count,
               "dev/contrastive_loss": float(stats["contrastive"]) / count,
               "dev/accuracy": float(stats["correct"]) / count,
               "dev/masked_frames": int(stats["num_masked"])}
        codewords = self.pretraining.num_codevectors_per_group
        collapsed = []
        for g in range(self.pretraining.num_codevector_groups):
            dev[f"dev/code_perplexity/g{g}"] = float(stats["code_perplexity"][g]) / count
            dev[f"dev/prob_perplexity/g{g}"] = float(stats["prob_perplexity"][g]) / count
            if dev[f"dev/code_perplexity/g{g}"] < self.config.collapse_fraction * codewords:
                collapsed.append(g)
        if collapsed:
            logging.warning("codebook collapse: dev code perplexity of group(s) %s below %.0f%% of "
                            "their %d codewords (%s); consider a larger objective.diversity_weight",
                            collapsed, 100 * self.config.collapse_fraction, codewords,
                            [round(dev[f"dev/code_perplexity/g{g}"], 1) for g in collapsed])
        dev["dev/collapsed_groups"] = len(collapsed)
        return dev

    def score(self, dev: Mapping[str, Any]) -> float:
        return -dev["dev/loss"] if self.config.best_metric == "loss" else dev["dev/accuracy"]


def run_pretraining(config: ml_collections.ConfigDict, workdir: files.PathLike) -> dict[str, Any]:
    """Pre-train (or resume) in `workdir`; returns {"step", "stopped", "dev"} (see loop.run)."""
    return loop.run(PreTraining(config), workdir)


def export_model(workdir: files.PathLike, out_dir: files.PathLike, step: str | int = "best") -> int:
    """Write checkpoint `step` ('best', 'latest' or a number) of a pre-training run as a model
    directory (for a multi-host run, or another step than the last); returns the step."""
    task = PreTraining(run_config(workdir), saved=True)
    checkpoints = Checkpoints(workdir, task.config, read_only=True)
    try:
        chosen = {"best": checkpoints.best_step() or checkpoints.latest_step(),
                  "latest": checkpoints.latest_step()}.get(step, step)
        if chosen is None:
            raise FileNotFoundError(f"{workdir}: no checkpoint to export")
        graphdef, state = S.Phases(task).abstract_state(0)
        mesh = sharding.make_mesh(devices=jax.local_devices())
        state, _ = checkpoints.restore(int(chosen), abstract(state, sharding.state_shardings(state, mesh)))
    finally:
        checkpoints.close()
    checkpoint.save_model(nnx.merge(graphdef, state["params"], state["rng"]), out_dir,
                          lambda into: write_training_record(workdir, into, step=int(chosen)))
    logging.info("exported step %s of %s to %s", chosen, workdir, out_dir)
    return int(chosen)


def generated_corpus(data_dir: str) -> dict[str, Any] | None:
    """The voices of an eSpeak corpus (None for other audio), so a reader of the model can check
    which speakers it heard: {"generator", "seed", "speakers": voice indices}."""
    path = os.path.join(data_dir, espeak.SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    return {"generator": "espeak", "seed": summary["seed"],
            "speakers": sorted(v["index"] for split in summary["speakers"].values() for v in split)}


def write_training_record(workdir: files.PathLike, model_dir: files.PathLike,
                          step: int | None = None) -> None:
    """Beside an exported model: training.json (the run's config and data, the voices of its
    generated corpus, every dev evaluation, the last train metrics, the exported step when
    chosen) and its training curves, into the model directory save_model is assembling (its
    write_extras: on process 0, which holds metrics.jsonl, and before the completion record, so
    a whole model directory has them)."""
    from w2v_jax.analysis.plots import plot_training_curves

    workdir, model_dir = files.path(workdir), files.path(model_dir)
    rows = [json.loads(line) for line in (workdir / METRICS_FILE).read_text().splitlines()
            if line.strip()]
    train_rows = [r for r in rows if "train/loss" in r]
    data = files.read_json(workdir / DATA_FILE)
    config = run_config(workdir)
    files.write_json(model_dir / TRAINING_FILE, {
        "workdir": os.fspath(files.absolute(workdir)), "exported_step": step, "data": data,
        "corpus": generated_corpus(config.data.dir), "config": config.to_dict(),
        "last_train": train_rows[-1] if train_rows else None,
        "dev": [r for r in rows if "dev/loss" in r]})
    groups = sorted({k.rsplit("/", 1)[1] for r in rows for k in r if "/code_perplexity/" in k})
    plot_training_curves(rows, {
        "loss": ("train/loss", "train/contrastive_loss", "dev/contrastive_loss"),
        "contrastive accuracy": ("train/accuracy", "dev/accuracy"),
        "code perplexity": tuple(f"{split}/code_perplexity/{g}" for g in groups
                                 for split in ("train", "dev")),
        "diversity loss and temperature": ("train/diversity_loss", "train/temperature"),
        "gradient norm": ("train/grad_norm",), "learning rate": ("train/learning_rate",)},
        model_dir / CURVES)
