"""Fine-tuning frame classifiers (the Task of w2v_jax.train.task): phase 0 trains the heads,
phase 1 (from config.freeze_steps) the backbone too, the CNN unless freeze_feature_encoder.

    from w2v_jax.train import default_config, train
    config = default_config(); config.data.dir = "corpus"; ...
    summary = train(config, "runs/tone")
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from w2v_jax import checkpoint, data, files
from w2v_jax.data import labels as L
from w2v_jax.models import ConfigError, Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.train import build, loop
from w2v_jax.train.config import SCORES, resolve_config
from w2v_jax.train.heads import FrameClassifier, confusion_matrix, labelled_frames, multitask_loss
from w2v_jax.train.metrics import summarize_confusion
from w2v_jax.train.optim import FROZEN

HEADS, BACKBONE = "heads", "backbone"
INVENTORIES_FILE = "inventories.json"
BACKBONE_DIR = "backbone"
# The backbone's Wav2Vec2Config as the run resolved it, so the workdir does not need config.init.
BACKBONE_CONFIG_FILE = "backbone_config.json"
BATCH_KEYS = ("input_values", "attention_mask")


def run_backbone_config(workdir: files.PathLike) -> Wav2Vec2Config:
    """The backbone architecture (with its switches) the run in `workdir` saved when it started."""
    path = files.path(workdir) / BACKBONE_CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: a run writes it when it starts; rerun the "
                                "training command on this workdir (it resumes) to write it")
    return Wav2Vec2Config.from_dict(files.read_json(path))


class FineTuning:
    """Frame classifiers on a wav2vec 2.0 backbone, one linear head per config.tasks entry."""

    num_phases = 2

    def __init__(self, config: ml_collections.ConfigDict, model_config: Wav2Vec2Config | None = None):
        """`config` is checked and resolved here. With `model_config`, `config` is a run's recorded
        config (checked when the run started; this machine's devices may differ) and prepare is
        skipped: the evaluation of a finished run."""
        self.config = resolve_config(config) if model_config is None else config
        self.tasks = tuple(self.config.tasks)
        self.weights = {task: float(w) for task, w in self.config.tasks.items()}
        self.model_config = model_config
        # Set (sorted speaker ids of the eval split) to break the eval statistics down by
        # speaker, as the speaker bootstrap of test accuracy needs (train.evaluate_run).
        self.eval_speakers: list[str] | None = None

    # -- the run ---------------------------------------------------------------------------
    def prepare(self, workdir: files.PathLike, resuming: bool) -> None:
        """The backbone's architecture: from config.init for a new run, from the workdir for a
        resumed one, since config.init may be gone. Then the data splits."""
        c = self.config
        if resuming and (files.path(workdir) / BACKBONE_CONFIG_FILE).exists():
            self.model_config = build.with_switches(run_backbone_config(workdir), c)
        else:
            if c.init != "random" and not files.path(c.init.partition(":")[2]).is_dir():
                raise ConfigError(f"config.init={c.init!r}: no such directory")
            self.model_config = build.backbone_config(c)
        self.train_split = build.load_split(c, c.data.train_split, self.model_config)
        self.eval_split = build.load_split(c, c.data.eval_split, self.model_config)

    def run_files(self) -> dict[str, Any]:
        return {BACKBONE_CONFIG_FILE: self.model_config.to_dict(), INVENTORIES_FILE: L.inventories()}

    def build_model(self, *, abstract: bool) -> FrameClassifier:
        """The initial model (backbone as config.init says, heads at random), or its structure."""
        c = self.config
        if abstract:
            return nnx.eval_shape(lambda: FrameClassifier(
                Wav2Vec2Model(self.model_config, rngs=nnx.Rngs(c.seed)), self.tasks,
                head_dropout=c.head_dropout, rngs=nnx.Rngs(c.seed + 1)))
        return FrameClassifier(build.backbone(c, self.model_config), self.tasks,
                               head_dropout=c.head_dropout, rngs=nnx.Rngs(c.seed + 1))

    def export(self, model: FrameClassifier, workdir: files.PathLike) -> None:
        """The fine-tuned backbone as a model directory (checkpoint.load_model reads it)."""
        target = files.path(workdir) / BACKBONE_DIR
        if checkpoint.is_saved(target):
            logging.info("%s exists; not exporting again", target)
            return
        checkpoint.save_model(model.wav2vec2, target)
        logging.info("exported the fine-tuned backbone to %s", target)

    # -- the optimizer -----------------------------------------------------------------------
    def phase(self, step: int) -> int:
        return 0 if step < self.config.freeze_steps else 1

    def groups(self, phase: int) -> tuple[str, ...]:
        return (HEADS,) if phase == 0 else (HEADS, BACKBONE)

    def param_label(self, path: tuple[str, ...], phase: int) -> str:
        if path[0] == "heads":
            return HEADS
        if phase == 0 or (self.config.freeze_feature_encoder and "feature_extractor" in path):
            return FROZEN
        return BACKBONE

    # -- data ----------------------------------------------------------------------------------
    def _batches(self, split: data.DatasetSplit, batch_size: int, train: bool) -> data.Batches:
        # Evaluation passes keep threads: each pass would start its own worker processes.
        return data.Batches(split, self.model_config, batch_size=batch_size, train=train,
                            seed=self.config.seed, tasks=self.tasks,
                            process_index=jax.process_index(), process_count=jax.process_count(),
                            num_buckets=self.config.data.num_buckets,
                            processes=self.config.data.processes if train else 0)

    def train_batches(self, batch_size: int) -> data.Batches:
        return self._batches(self.train_split, batch_size, train=True)

    def eval_batches(self, batch_size: int):
        batches = self._batches(self.eval_split, batch_size, train=False)
        try:
            index = {speaker: i for i, speaker in enumerate(self.eval_speakers or ())}
            for batch in batches:
                out = {k: batch[k] for k in (*BATCH_KEYS, *(f"labels/{t}" for t in self.tasks))}
                if self.eval_speakers is not None:  # padding rows ("") have no labelled frame
                    out["speaker_index"] = np.array([index.get(s, 0) for s in batch["speaker"]],
                                                    np.int32)
                yield out
        finally:
            batches.close()

    def stack(self, micro_batches: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """(accum, batch, ...) arrays, each micro-batch padded to the longest."""
        samples = max(b["input_values"].shape[1] for b in micro_batches)
        frames = int(self.model_config.num_frames(samples))

        def pad(x, width, value):
            return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=value)

        out = {k: np.stack([pad(b[k], samples, 0) for b in micro_batches]) for k in BATCH_KEYS}
        for task in self.tasks:
            out[f"labels/{task}"] = np.stack([pad(b[f"labels/{task}"], frames, L.IGNORE)
                                              for b in micro_batches])
        return out

    # -- loss and evaluation (under jit) ----------------------------------------------------------
    def normalizers(self, batch):
        return labelled_frames({task: batch[f"labels/{task}"] for task in self.tasks})

    def loss(self, model, batch, normalizers, step):
        logits = model(batch["input_values"], batch["attention_mask"], deterministic=False)
        labels = {task: batch[f"labels/{task}"] for task in self.tasks}
        return multitask_loss(logits, labels, self.weights, normalizers)

    def eval_stats(self, model, batch):
        logits = model(batch["input_values"], batch["attention_mask"], deterministic=True)
        stats = {task: confusion_matrix(logits[task], batch[f"labels/{task}"]) for task in self.tasks}
        if self.eval_speakers is not None:
            for task in self.tasks:
                labels = batch[f"labels/{task}"]
                valid = labels != L.IGNORE
                right = (jnp.argmax(logits[task], -1) == labels) & valid
                stats[f"{task}/by_speaker"] = jnp.stack([jax.ops.segment_sum(
                    x.sum(-1), batch["speaker_index"], num_segments=len(self.eval_speakers))
                    for x in (right, valid)])  # (2, speakers): frames right, frames scored
        return stats

    def summarize(self, stats) -> dict[str, Any]:
        """Per task frame accuracy, per-class accuracy and confusion; and the scores' task means."""
        metrics: dict[str, Any] = {}
        for task in self.tasks:
            for name, value in summarize_confusion(stats[task]).items():
                metrics[f"dev/{task}/{name}"] = value
            if f"{task}/by_speaker" in stats:
                correct, frames = np.asarray(stats[f"{task}/by_speaker"]).tolist()
                metrics[f"dev/{task}/by_speaker"] = {"speakers": list(self.eval_speakers),
                                                     "correct": correct, "frames": frames}
        for score in SCORES:  # the task means, which config.best_metric may name too
            metrics[f"dev/{score}"] = float(np.mean([metrics[f"dev/{t}/{score}"] for t in self.tasks]))
        return metrics

    def score(self, dev: Mapping[str, Any]) -> float:
        return dev["dev/" + self.config.best_metric]


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tune (or resume) the run in `workdir`; returns {"step", "stopped", "dev"}.

    `stopped` is "done", "preempted" (SIGTERM) or "nonfinite" (max_nonfinite in a row).
    """
    return loop.run(FineTuning(config), workdir)
