"""Reading audio as 16 kHz mono int16.

Policy: another sample rate is resampled with librosa (soxr_hq) and logged; with
resample=False it is a DataError. Multi-channel audio is mixed to mono.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
from absl import logging

from w2v_jax.data.errors import DataError

SAMPLE_RATE = 16000


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def read_wav(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE,
             resample: bool = True) -> np.ndarray:
    """(num_samples,) int16 mono audio at `sample_rate`; DataError naming the file if unusable."""
    path = os.fspath(path)
    try:
        info = sf.info(path)
        if info.channels == 1 and info.samplerate == sample_rate:
            audio = sf.read(path, dtype="int16", always_2d=False)[0]
        else:
            audio = sf.read(path, dtype="float32", always_2d=True)[0]
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise DataError(f"{path}: cannot read audio: {e}") from None
    if audio.size == 0:
        raise DataError(f"{path}: audio is empty")
    if audio.dtype == np.int16:
        return audio
    audio = audio.mean(axis=1)
    if info.samplerate != sample_rate:
        if not resample:
            raise DataError(f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate} Hz "
                            "(resampling disabled)")
        import librosa  # slow first import (numba): only when a file needs it
        logging.info("%s: resampling %d Hz -> %d Hz", path, info.samplerate, sample_rate)
        audio = librosa.resample(audio, orig_sr=info.samplerate, target_sr=sample_rate,
                                 res_type="soxr_hq")
    return _to_int16(audio)
