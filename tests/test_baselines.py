"""Log-mel baseline frames against a numpy FFT of the model frame's own samples."""

import librosa
import numpy as np
import pytest
from scipy.signal import get_window

from w2v_jax.analysis.baselines import N_MELS, log_mel_at_frames

STRIDE, FIELD = 320, 400


def reference_log_mel(audio, frame):
    """Hann-windowed power spectrum of samples [320 i, 320 i + 400), through librosa's mel filters."""
    chunk = audio[STRIDE * frame: STRIDE * frame + FIELD]
    power = np.abs(np.fft.rfft(chunk * get_window("hann", FIELD, fftbins=True))) ** 2
    return np.log(librosa.filters.mel(sr=16000, n_fft=FIELD, n_mels=N_MELS) @ power + 1e-10)


def test_log_mel_rows_are_the_store_segments_frames():
    rng = np.random.default_rng(0)
    examples = [{"id": f"U{i}", "audio": (rng.standard_normal(16000 + 977 * i) * 3000).astype(np.int16)}
                for i in range(3)]
    table = {"utterance": np.array(["U2", "U0", "U2", "U1"]), "frame": np.array([40, 0, 3, 49])}
    got = log_mel_at_frames(examples, table, frame_stride=STRIDE, receptive_field=FIELD)
    assert got.shape == (4, N_MELS) and got.dtype == np.float32
    by_id = {e["id"]: e["audio"] / 32768.0 for e in examples}
    for row, (utt, frame) in enumerate(zip(table["utterance"], table["frame"])):
        np.testing.assert_allclose(got[row], reference_log_mel(by_id[utt], frame), atol=1e-3)


def test_log_mel_needs_the_stores_split():
    with pytest.raises(ValueError, match="1 utterance\\(s\\) of the store are not in the split"):
        log_mel_at_frames([], {"utterance": np.array(["U9"]), "frame": np.array([0])},
                          frame_stride=STRIDE, receptive_field=FIELD)
