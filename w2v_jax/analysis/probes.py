"""Layer-wise linear probes: multinomial logistic regression per layer, on the device.

Each layer gets its own probe, trained full-batch with L-BFGS (optax) on
standardised features with an L2 penalty, on training speakers only, and scored
on held-out speakers. The training and test rows are gathered once for all layers
(the fit sees only the training rows), and all layers train in one jit.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from w2v_jax.analysis.sweep import map_layers


def speaker_split(speakers: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0,
                  strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks over samples with no speaker on both sides.

    speakers: (N,) speaker id per sample. About test_fraction of the speakers
    (at least one, at most all but one) go to the test side. strata: (N,) optional
    group of each sample's speaker (e.g. sex); then the fraction is drawn within each
    group, so every group has speakers on both sides (a sex probe needs both sexes
    in training and in testing).
    """
    speakers = np.asarray(speakers)
    ids = np.unique(speakers)
    if strata is None:
        groups = {None: ids}
    else:
        strata = np.asarray(strata)
        per_speaker = {s: np.unique(strata[speakers == s]) for s in ids}
        mixed = [s for s, g in per_speaker.items() if len(g) > 1]
        if mixed:
            raise ValueError(f"speakers {mixed[:3]} fall in more than one stratum")
        groups = {g: np.array([s for s in ids if per_speaker[s][0] == g])
                  for g in np.unique(strata)}
    rng = np.random.default_rng(seed)
    test_ids = []
    for group, members in groups.items():
        if len(members) < 2:
            where = "" if group is None else f" of stratum {group}"
            raise ValueError(f"a speaker-disjoint split needs at least 2 speakers{where}, "
                             f"got {len(members)}")
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test_ids.extend(rng.choice(members, n_test, replace=False))
    test = np.isin(speakers, test_ids)
    return ~test, test


def _standardise(x, w):
    """Standardise with the weighted (training) mean and std; constant features -> 0."""
    total = jnp.sum(w)
    mean = jnp.einsum("n,nd->d", w, x) / total
    var = jnp.einsum("n,nd->d", w, jnp.square(x - mean)) / total
    return (x - mean) * jnp.where(var > 0, jax.lax.rsqrt(jnp.where(var > 0, var, 1.0)), 0.0)


def _fit(x, onehot, w, l2, steps):
    """Weighted multinomial logistic regression by L-BFGS; returns (W, b)."""
    params = (jnp.zeros((x.shape[1], onehot.shape[1]), x.dtype), jnp.zeros(onehot.shape[1], x.dtype))

    def loss(p):
        logits = x @ p[0] + p[1]
        nll = -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=1)
        return jnp.sum(w * nll) / jnp.sum(w) + l2 * jnp.sum(jnp.square(p[0]))

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(p, updates), state), None

    return jax.lax.scan(step, (params, opt.init(params)), length=steps)[0][0]


def _scores(pred, labels, w, num_classes):
    """Weighted accuracy and macro-F1 over classes seen in labels or predictions."""
    hit = (pred == labels).astype(w.dtype)
    accuracy = jnp.sum(w * hit) / jnp.sum(w)
    correct = (w > 0) & (pred == labels)
    truth = jax.nn.one_hot(labels, num_classes, dtype=w.dtype) * w[:, None]
    guess = jax.nn.one_hot(pred, num_classes, dtype=w.dtype) * w[:, None]
    tp = jnp.sum(truth * guess, axis=0)
    support, predicted = jnp.sum(truth, axis=0), jnp.sum(guess, axis=0)
    f1 = 2 * tp / jnp.maximum(support + predicted, 1)
    present = (support + predicted) > 0
    return accuracy, jnp.sum(jnp.where(present, f1, 0)) / jnp.sum(present), correct


@partial(jax.jit, static_argnames=("num_classes", "steps", "batch_size", "num_train"))
def _probe_layers_jit(h, labels, l2, num_classes, steps, batch_size, num_train):
    # h (L, N, D) holds the training rows first, then the test rows: the fit, the cost,
    # sees the num_train training rows only.
    onehot = jax.nn.one_hot(labels[:num_train], num_classes, dtype=h.dtype)
    w_train = jnp.ones(num_train, h.dtype)
    w_test = jnp.ones(h.shape[1] - num_train, h.dtype)

    def layer(x):
        z = _standardise(x, jnp.concatenate([w_train, jnp.zeros_like(w_test)]))
        weights, bias = _fit(z[:num_train], onehot, w_train, l2, steps)
        return _scores(jnp.argmax(z[num_train:] @ weights + bias, axis=1), labels[num_train:],
                       w_test, num_classes)

    return map_layers(layer, h, batch_size)


def probe_layers(h: jax.Array, labels: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                 num_classes: int | None = None, l2: float = 1e-3, steps: int = 100,
                 batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Train and score one linear probe per layer.

    Args:
      h: (L, N, D) float embeddings; labels: (N,) integer classes, -1 = ignore
        (masked out of training and scoring); train, test: (N,) boolean masks,
        e.g. from `speaker_split` (they must not overlap).
      num_classes: at least labels.max() + 1 (the default); l2: penalty on the weights
        (of standardised features); steps: L-BFGS iterations; batch_size:
        layers trained together (memory), None for all.

    Returns:
      {"accuracy": (L,), "macro_f1": (L,)} on the test samples, and "correct" (L, N):
      which test samples each layer's probe got right (for speaker-bootstrap intervals).

    Raises:
      ValueError: bad shapes or masks, NaN/inf, labels beyond num_classes, or
        training samples of fewer than 2 classes.
    """
    h, labels = jnp.asarray(h), np.asarray(labels)
    train, test = np.asarray(train, bool), np.asarray(test, bool)
    if h.ndim != 3 or not jnp.issubdtype(h.dtype, jnp.floating):
        raise ValueError(f"h must be (L, N, D) floating point, got {h.dtype} {h.shape}")
    n = h.shape[1]
    if labels.shape != (n,) or train.shape != (n,) or test.shape != (n,):
        raise ValueError(f"labels, train and test must all have shape ({n},)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < -1:
        raise ValueError("labels must be integers >= 0, or -1 to ignore")
    if np.any(train & test):
        raise ValueError("train and test masks overlap")
    if not np.any(train & (labels >= 0)) or not np.any(test & (labels >= 0)):
        raise ValueError("train and test must each hold labelled samples")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if labels.max() >= num_classes:  # jax's one_hot would make those rows all zero
        raise ValueError(f"labels reach class {labels.max()} but num_classes is {num_classes}")
    trained = np.unique(labels[train & (labels >= 0)])
    if len(trained) < 2:  # a one-class probe is trivially right on that class
        raise ValueError(f"the training samples hold only class {trained[0]}: a probe needs "
                         "at least 2 classes")
    if not bool(jnp.isfinite(h).all()):
        raise ValueError("h contains NaN or inf")
    fit_rows = np.nonzero(train & (labels >= 0))[0]  # the ignore label takes part in nothing
    score_rows = np.nonzero(test & (labels >= 0))[0]
    rows = np.concatenate([fit_rows, score_rows])
    acc, f1, hits = _probe_layers_jit(h[:, rows], jnp.asarray(labels[rows]), l2, num_classes,
                                      steps, batch_size, len(fit_rows))
    correct = np.zeros((h.shape[0], n), bool)
    correct[:, score_rows] = np.asarray(hits)
    return {"accuracy": np.asarray(acc), "macro_f1": np.asarray(f1), "correct": correct}
