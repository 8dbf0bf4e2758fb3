"""The wav2vec 2.0 pre-training objective, as fairseq trains it.

Per batch (fairseq's `Wav2Vec2Model.forward` and `Wav2vecCriterion`):

- **Masks** (host side, `span_mask`): per utterance of `n` real frames, `max(2, int(0.65 n / 10
  + u))` span starts drawn without replacement from `[0, n - 10)`, each masking 10 frames,
  clipped to the real frames (overlaps allowed). Padding is never masked.
- **Distractors** (host side, `sample_distractors`): for every masked frame, K = 100 indices
  drawn uniformly, with replacement, from the *other* masked frames of the same utterance
  (never padding, never the positive).
- **Quantizer**: hard straight-through Gumbel-softmax at temperature
  `tau(step) = max(2 * 0.999995**step, 0.5)` (`gumbel_temperature`); argmax when
  deterministic.
- **Logits**: cosine(project_hid(c_t), project_q(q)) / 0.1 for the positive and the K
  distractors; a distractor whose codewords equal the positive's is set to -inf.
- **Loss** over the M masked frames of the batch (fairseq's criterion with
  `sample_size = M` and `loss_weights = [0.1, 10]`, after the trainer divides the
  gradient by the sample size)::

      loss_sum = sum_t CE_t + 0.1 * M * (GV - PPL) / GV + 10 * M * mean(f**2)
      loss     = loss_sum / M

  CE_t is the cross-entropy of the positive among the K + 1 logits; PPL =
  sum_g exp(H(mean_t softmax(l_{t,g}))) is the softmax ("prob") perplexity over the batch's
  masked frames; f are the CNN features before their LayerNorm, averaged over real frames
  and channels (fairseq averages over the padding too; its Base recipe has none). The
  feature encoder's gradient is scaled by `feature_grad_mult` = 0.1 (the penalty's too, as
  in fairseq). A trainer that accumulates micro-batches or devices sums `loss_sum` and `M`
  and divides once; the perplexity is then per micro-batch, as fairseq's is per GPU.

`pretraining_loss` also returns transformers' reductions for parity:
`contrastive_loss` = sum_t CE_t and `diversity_loss` = M (GV - PPL) / GV, where in
deterministic (eval) mode PPL is transformers' eval one: the perplexity of the *argmax*
codewords (fairseq's `code_perplexity`), and in training mode the softmax one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from w2v_jax.models.config import ConfigError
from w2v_jax.models.quantizer import perplexity

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Objective:
    """fairseq's wav2vec 2.0 Base pre-training recipe."""

    mask_prob: float = 0.65
    mask_length: int = 10
    min_masks: int = 2
    num_negatives: int = 100
    logit_temperature: float = 0.1
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    feature_grad_mult: float = 0.1
    max_temperature: float = 2.0
    min_temperature: float = 0.5
    temperature_decay: float = 0.999995

    def __post_init__(self):
        def fail(field, why):
            raise ConfigError(f"Objective.{field}={getattr(self, field)!r}: {why}")

        for field in ("mask_length", "num_negatives"):
            if int(getattr(self, field)) < 1:
                fail(field, "must be a positive integer")
        if not 0.0 < self.mask_prob <= 1.0:
            fail("mask_prob", "must lie in (0, 1]")
        if not 0.0 < self.min_temperature <= self.max_temperature:
            fail("min_temperature", "must lie in (0, max_temperature]")
        if not 0.0 < self.temperature_decay <= 1.0:
            fail("temperature_decay", "must lie in (0, 1]")
        if self.logit_temperature <= 0.0:
            fail("logit_temperature", "must be positive")


def gumbel_temperature(step, objective: Objective = Objective()):
    """fairseq: max(max_temp * decay ** num_updates, min_temp); numpy or jax `step`."""
    xp = jnp if isinstance(step, jax.Array) else np
    # exp(step * log(decay)) with the log in float64: decay ** step in float32 would carry
    # decay's rounding (6e-8) times step, 0.6% of tau after 1e5 updates.
    decayed = objective.max_temperature * xp.exp(xp.asarray(step, xp.float32)
                                                 * np.log(objective.temperature_decay))
    return xp.maximum(decayed, objective.min_temperature)


# ----------------------------------------------------------------- host-side sampling
def span_mask(rng: np.random.Generator, frame_lengths, num_frames: int,
              objective: Objective = Objective()) -> np.ndarray:
    """(B, num_frames) bool: fairseq's `compute_mask_indices` (static span lengths, overlaps
    allowed, a random rounding per utterance) on each utterance's first `frame_lengths[b]`
    frames only. fairseq's `require_same_masks` (thinning every row to the batch's smallest
    count, needed by its dense layout) is not applied: the loss takes any count per row."""
    lengths = np.asarray(frame_lengths, np.int64)
    if lengths.ndim != 1 or (lengths > num_frames).any() or (lengths < 0).any():
        raise ValueError(f"frame_lengths must be (B,) in [0, {num_frames}]; got {lengths}")
    span, mask = objective.mask_length, np.zeros((len(lengths), num_frames), bool)
    for row, size in enumerate(lengths):
        count = max(objective.min_masks, int(objective.mask_prob * size / span + rng.random()))
        room = span if size - span > count else size - count - 1  # fairseq's short-utterance case
        starts = rng.choice(size - room, count, replace=False)
        frames = (starts[:, None] + np.arange(span)[None]).ravel()
        mask[row, frames[(frames >= 0) & (frames < size)]] = True
    return mask


def sample_distractors(rng: np.random.Generator, mask_time_indices,
                       num_negatives: int = Objective.num_negatives) -> np.ndarray:
    """(B, T, K) int32 indices into the flattened (B * T) frames, transformers' layout.

    For a masked frame t of row b: K draws, uniform with replacement, over the other masked
    frames of row b (fairseq's `sample_negatives`: randint over M - 1, shifted past the
    positive). Unmasked frames point at themselves (the loss ignores them)."""
    mask = np.asarray(mask_time_indices, bool)
    batch, frames = mask.shape
    out = np.broadcast_to(np.arange(batch * frames, dtype=np.int32).reshape(batch, frames, 1),
                          (batch, frames, num_negatives)).copy()
    for row in range(batch):
        masked = np.flatnonzero(mask[row])
        if len(masked) == 0:
            continue
        if len(masked) < 2:
            raise ValueError(f"row {row} has {len(masked)} masked frame: distractors need at least 2")
        draws = rng.integers(0, len(masked) - 1, size=(len(masked), num_negatives))
        draws += draws >= np.arange(len(masked))[:, None]
        out[row, masked] = masked[draws] + row * frames
    return out


def sample_batch(rng: np.random.Generator, frame_lengths, num_frames: int,
                 objective: Objective = Objective()) -> dict[str, np.ndarray]:
    """Masks and distractors of one batch. `frame_lengths` = config.num_frames(real samples
    per row), `num_frames` = config.num_frames(padded samples). Draw `rng` from (seed, step,
    process) so that a resumed run redraws exactly:
    `np.random.default_rng((seed, step, process_index))`."""
    mask = span_mask(rng, frame_lengths, num_frames, objective)
    return {"mask_time_indices": mask,
            "sampled_negative_indices": sample_distractors(rng, mask, objective.num_negatives)}


# ------------------------------------------------------------------------ the loss
def _normalize(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)  # torch's eps


def pretraining_loss(model, input_values: jax.Array, attention_mask: jax.Array | None,
                     mask_time_indices: jax.Array, sampled_negative_indices: jax.Array, *,
                     objective: Objective = Objective(), deterministic: bool = True,
                     temperature: float | jax.Array | None = None) -> dict[str, jax.Array]:
    """Every loss term and metric of one batch (see the module docstring for definitions).

    `model` is a `Wav2Vec2ForPreTraining`; `mask_time_indices` (B, T) bool, masked frames
    outside the real audio are ignored; `sampled_negative_indices` (B, T, K) flat indices
    b * T + t' of frames of the same row (`sample_distractors`). `temperature` is the
    Gumbel temperature (training mode only; default `objective.max_temperature`).

    Returns `contrastive_loss` and `diversity_loss` (transformers' reductions),
    `feature_penalty`, `loss_sum` and `num_masked` (fairseq's objective is their ratio,
    also given as `loss`), `correct` and `accuracy` (fairseq's: the positive has the
    largest logit, ties of all logits excluded), `code_perplexity` and `prob_perplexity`
    (summed over groups) with their `*_per_group`, and `temperature`.
    """
    temperature = objective.max_temperature if temperature is None else temperature
    out = model(input_values, attention_mask, mask_time_indices, deterministic=deterministic,
                gumbel_temperature=temperature, feature_grad_mult=objective.feature_grad_mult)
    batch, frames, _ = out.projected_states.shape
    mask = jnp.asarray(mask_time_indices, bool) & out.frame_mask
    num_masked = jnp.sum(mask).astype(jnp.float32)

    # Cosine similarity of every (prediction, target) pair of a row: (B, T, T), far smaller
    # than gathering K target vectors per frame; then the positive and the K distractors.
    similarity = jnp.einsum("btp,bsp->bts", _normalize(out.projected_states),
                            _normalize(out.projected_quantized_states),
                            precision=_HIGHEST) / objective.logit_temperature
    local = jnp.clip(sampled_negative_indices - (jnp.arange(batch) * frames)[:, None, None],
                     0, frames - 1)
    positive = jnp.diagonal(similarity, axis1=1, axis2=2)  # (B, T)
    negatives = jnp.take_along_axis(similarity, local, axis=2)  # (B, T, K)
    codes = out.codes  # equal codewords in every group <=> equal quantized vectors
    same = jnp.all(jax.vmap(lambda c, i: c[i])(codes, local) == codes[:, :, None, :], axis=-1)
    logits = jnp.concatenate([positive[..., None], jnp.where(same, -jnp.inf, negatives)], -1)
    cross_entropy = jax.nn.logsumexp(logits, axis=-1) - positive
    contrastive = jnp.sum(jnp.where(mask, cross_entropy, 0.0))
    best, worst = jnp.argmax(logits, -1) == 0, jnp.argmin(logits, -1) == 0
    correct = jnp.sum(mask & best & ~worst).astype(jnp.float32)

    num_vars = model.pretraining.num_codevector_groups * model.pretraining.num_codevectors_per_group
    hard = jax.nn.one_hot(codes, model.pretraining.num_codevectors_per_group, dtype=jnp.float32)
    code_ppl, prob_ppl = perplexity(hard, mask), perplexity(out.code_probs, mask)
    eval_ppl = jnp.sum(code_ppl) if deterministic else jnp.sum(prob_ppl)
    diversity_hf = (num_vars - eval_ppl) / num_vars * num_masked
    diversity = (num_vars - jnp.sum(prob_ppl)) / num_vars * num_masked

    real = out.frame_mask[:, :, None].astype(jnp.float32)
    squares = jnp.square(out.conv_features.astype(jnp.float32)) * real
    penalty = jnp.sum(squares) / jnp.maximum(jnp.sum(real) * squares.shape[-1], 1.0)

    loss_sum = (contrastive + objective.diversity_weight * diversity
                + objective.feature_penalty_weight * penalty * num_masked)
    denominator = jnp.maximum(num_masked, 1.0)
    return {
        "loss_sum": loss_sum, "num_masked": num_masked, "loss": loss_sum / denominator,
        "contrastive_loss": contrastive, "diversity_loss": diversity_hf,
        "feature_penalty": penalty, "correct": correct, "accuracy": correct / denominator,
        "code_perplexity": jnp.sum(code_ppl), "prob_perplexity": jnp.sum(prob_ppl),
        "code_perplexity_per_group": code_ppl, "prob_perplexity_per_group": prob_ppl,
        "temperature": jnp.asarray(temperature, jnp.float32),
    }


def loss_fn(model, batch: dict, step, objective: Objective = Objective(), *,
            deterministic: bool = False):
    """The trainer's interface: (loss_sum, count, metrics) of one batch at update `step`.

    `batch` holds input_values, attention_mask, mask_time_indices and
    sampled_negative_indices (`sample_batch`). Gradients come from `loss_sum`; the
    trainer divides by the summed `count` over micro-batches and devices."""
    terms = pretraining_loss(model, batch["input_values"], batch.get("attention_mask"),
                             batch["mask_time_indices"], batch["sampled_negative_indices"],
                             objective=objective, deterministic=deterministic,
                             temperature=gumbel_temperature(jnp.asarray(step), objective))
    return terms["loss_sum"], terms["num_masked"], terms
