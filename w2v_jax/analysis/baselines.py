"""What a score means: chance floors and a log-mel reference (issue #14 item 3).

    random    SVCCA / probe accuracy of Gaussian features of the model's N and width:
              what the sample size alone gives (not 0: k directions against C - 1
              label directions fit noise at about sqrt(k (C - 1) / N)).
    permuted  each layer scored against labels permuted over segments: the same
              features, the label information destroyed.
    log-mel   80-band log-mel at the model's frame rate, the same central frames: what
              a spectrogram already carries, the line a representation must beat.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from w2v_jax.analysis.cca import svcca_layers
from w2v_jax.analysis.probes import probe_layers

N_MELS = 80


def gaussian_features(n: int, width: int, *, draws: int = 2, seed: int = 0) -> np.ndarray:
    """(draws, n, width) float32 standard Gaussian features."""
    return np.random.default_rng(seed).standard_normal((draws, n, width), np.float32)


def permuted(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The labels shuffled over segments (class counts kept)."""
    return np.random.default_rng(seed).permutation(labels)


def svcca_floors(h: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """{"svcca_random": (draws,), "svcca_permuted": (L,)} for layers h (L, N, D) and labels."""
    noise = gaussian_features(h.shape[1], h.shape[2], seed=seed)
    return {"svcca_random": np.asarray(svcca_layers(noise, labels, batch_size=1)),
            "svcca_permuted": np.asarray(svcca_layers(h, permuted(labels, seed), batch_size=1))}


def probe_floors(h: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                 num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """{"probe_random": (draws,), "probe_permuted": (L,)}: held-out accuracy of probes on
    Gaussian features, and on each layer trained and tested on permuted labels."""
    noise = gaussian_features(h.shape[1], h.shape[2], seed=seed)
    return {"probe_random": probe_layers(noise, labels, train, test,
                                         num_classes=num_classes)["accuracy"],
            "probe_permuted": probe_layers(h, permuted(labels, seed), train, test,
                                           num_classes=num_classes)["accuracy"]}


def log_mel(audio: np.ndarray, *, frame_stride: int, receptive_field: int,
            sample_rate: int = 16000, n_mels: int = N_MELS) -> np.ndarray:
    """(frames, n_mels) log-mel energies of float audio in [-1, 1], frame i over samples [stride i, stride i + field):
    the span of the model's frame i (wav2vec 2.0: 320 and 400 samples, 20 and 25 ms)."""
    import librosa  # imported here: slow to import, and only the baseline needs it

    audio = np.asarray(audio, np.float32)
    # n_fft = the field: a longer FFT would centre the window inside it, shifting every
    # frame by (n_fft - field) / 2 samples off the model's frame.
    mel = librosa.feature.melspectrogram(
        y=np.pad(audio, (0, max(0, receptive_field - len(audio)))), sr=sample_rate,
        n_fft=receptive_field, hop_length=frame_stride, center=False, n_mels=n_mels, power=2.0)
    return np.log(mel.T + 1e-10).astype(np.float32)


def log_mel_at_frames(examples: Sequence[dict], table: dict[str, np.ndarray], *,
                      frame_stride: int, receptive_field: int, sample_rate: int = 16000,
                      n_mels: int = N_MELS) -> np.ndarray:
    """(N, n_mels) log-mel at each store segment's central frame: a baseline "layer".

    examples: the split's examples (`w2v_jax.data` DatasetSplit.source: dicts with
    "id" and int16 "audio"); table: the store's segment table ("utterance", "frame").
    Row i is segment i of the store, so it pairs with the store's labels.
    """
    by_id = {str(e["id"]): e for e in examples}
    missing = sorted(set(table["utterance"]) - set(by_id))
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) of the store are not in the split, "
                         f"e.g. {missing[:3]}: the log-mel baseline needs the store's split")
    out = np.empty((len(table["utterance"]), n_mels), np.float32)
    for utterance in np.unique(table["utterance"]):
        rows = np.nonzero(table["utterance"] == utterance)[0]
        audio = np.asarray(by_id[utterance]["audio"])
        audio = audio / 32768.0 if np.issubdtype(audio.dtype, np.integer) else audio
        mel = log_mel(audio, frame_stride=frame_stride, receptive_field=receptive_field,
                      sample_rate=sample_rate, n_mels=n_mels)
        out[rows] = mel[np.minimum(table["frame"][rows], len(mel) - 1)]
    return out
