"""Frame classifiers on the last hidden state, and the masked multi-task loss."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from w2v_jax.data import labels as L
from w2v_jax.models import Wav2Vec2Model
from w2v_jax.models.layers import dropout
from w2v_jax.sharding import axes


class FrameClassifier(nnx.Module):
    """A backbone (`wav2vec2`, so its parameters sit under `wav2vec2/`) and one linear head per task."""

    def __init__(self, backbone: Wav2Vec2Model, tasks: Sequence[str], *, head_dropout: float = 0.0,
                 rngs: nnx.Rngs):
        self.wav2vec2 = backbone
        dim = backbone.config.hidden_size
        self.heads = nnx.Dict({task: nnx.Linear(dim, L.num_classes(task), rngs=rngs,
                                                kernel_metadata=axes("embed", "classes"),
                                                bias_metadata=axes("classes"))
                               for task in tasks})
        self.head_dropout = head_dropout

    def __call__(self, input_values: jax.Array, attention_mask: jax.Array | None = None, *,
                 deterministic: bool = True) -> dict[str, jax.Array]:
        """Logits (B, T, classes) per task, in float32 whatever the backbone computes in."""
        out = self.wav2vec2(input_values, attention_mask, deterministic=deterministic,
                            output_hidden_states=False)
        hidden = out.last_hidden_state.astype(jnp.float32)
        if not deterministic and self.head_dropout > 0.0:
            hidden = dropout(hidden, self.head_dropout, self.wav2vec2.rngs.dropout(), deterministic)
        return {task: head(hidden) for task, head in self.heads.items()}


def masked_cross_entropy(logits: jax.Array, labels: jax.Array,
                         count: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy summed over frames whose label is not IGNORE and divided by `count` (default:
    their number, the mean), and their number."""
    valid = labels != L.IGNORE
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                          jnp.where(valid, labels, 0))
    frames = jnp.sum(valid)
    count = frames if count is None else count
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(count, 1), frames


def labelled_frames(labels: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Frames with a label, per task: what the loss of a batch divides by."""
    return {task: jnp.sum(y != L.IGNORE) for task, y in labels.items()}


def multitask_loss(logits: Mapping[str, jax.Array], labels: Mapping[str, jax.Array],
                   weights: Mapping[str, float], counts: Mapping[str, jax.Array] | None = None
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """sum_task weight * masked CE; per-task losses and frame accuracies as metrics.

    Each task's sums are divided by counts[task] (default: this batch's labelled frames); a
    micro-batch divided by its whole accumulated batch's counts gives its share of the mean.
    """
    counts = labelled_frames(labels) if counts is None else counts
    total, metrics = 0.0, {}
    for task, weight in weights.items():
        loss, _ = masked_cross_entropy(logits[task], labels[task], counts[task])
        correct = (jnp.argmax(logits[task], -1) == labels[task]) & (labels[task] != L.IGNORE)
        metrics[f"{task}/loss"] = loss
        metrics[f"{task}/accuracy"] = jnp.sum(correct) / jnp.maximum(counts[task], 1)
        total = total + weight * loss
    return total, metrics


def confusion_matrix(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """(classes, classes) counts, rows = true label, columns = prediction; IGNORE frames skipped."""
    classes = logits.shape[-1]
    valid = (labels != L.IGNORE)[..., None]
    truth = jax.nn.one_hot(labels, classes, dtype=jnp.int32) * valid
    predicted = jax.nn.one_hot(jnp.argmax(logits, -1), classes, dtype=jnp.int32)
    return jnp.einsum("...i,...j->ij", truth, predicted)
