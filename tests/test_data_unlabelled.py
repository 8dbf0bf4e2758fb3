"""Unlabelled audio for pre-training: folders (recursive, wav and flac), a corpus's splits,
clear errors naming the file, random crops of the normalised file, exact resume."""

import numpy as np
import pytest
import soundfile as sf

from tests.data_fixtures import synthetic_corpus  # noqa: F401  (fixture)
from w2v_jax.data import DataError
from w2v_jax.data.unlabelled import AudioBatches, audio_files, find_audio
from w2v_jax.models import Wav2Vec2Config

CFG = Wav2Vec2Config.preset("tiny")
RATE = 16000


def _tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    """Nested wav and flac files of 0.5 to 2.4 s, plus a text file that is not audio."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    written = {}
    for i in range(12):
        sub = ["", "a", "a/b"][i % 3]
        ext = "flac" if i % 2 else "wav"
        path = tmp_path / sub / f"utt{i:02d}.{ext}"
        written[str(path)] = _tone(0.5 + 0.17 * i, i)
        sf.write(path, written[str(path)], RATE, subtype="PCM_16")
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    return tmp_path, written


def test_a_folder_is_searched_recursively_for_wav_and_flac(folder):
    root, written = folder
    assert find_audio(str(root)) == sorted(written)  # sorted walk; notes.txt is not audio
    train = audio_files(str(root), "train", eval_fraction=0.25)
    dev = audio_files(str(root), "dev", eval_fraction=0.25)
    assert set(train.paths) | set(dev.paths) == set(written) and not set(train.paths) & set(dev.paths)
    assert 0 < len(dev) < len(train)
    for path, length in zip(train.paths, train.lengths):
        assert length == len(written[path])  # from the header


def test_short_files_are_left_out(folder):
    root, written = folder
    files = audio_files(str(root), "train", eval_fraction=0.0, min_samples=RATE)
    assert set(files.paths) == {p for p, a in written.items() if len(a) >= RATE}


def test_a_corpus_gives_its_own_splits(synthetic_corpus):  # noqa: F811
    train = audio_files(synthetic_corpus, "train")
    assert train.paths and all("/wav/train/" in p for p in train.paths)
    assert all("/wav/dev/" in p for p in audio_files(synthetic_corpus, "dev").paths)


def test_a_corrupt_file_or_another_rate_is_an_error_naming_it(folder):
    root, _ = folder
    bad = root / "a" / "b" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="broken.wav: cannot read audio"):
        audio_files(str(root), "train", eval_fraction=0.0)
    bad.unlink()
    sf.write(root / "a" / "fast.flac", _tone(1.0, 99), 44100)
    with pytest.raises(DataError, match=r"fast.flac: sample rate 44100 Hz"):
        audio_files(str(root), "train", eval_fraction=0.0)


def _batches(files, **kwargs):
    return AudioBatches(files, CFG, batch_size=3, seed=5, max_samples=RATE,
                        num_buckets=2, prefetch=2, **kwargs)


def test_train_crops_are_slices_of_the_normalised_file_and_change_each_epoch(folder):
    root, written = folder
    files = audio_files(str(root), "train", eval_fraction=0.0)
    stored = {}
    for path in written:
        x = sf.read(path, dtype="int16")[0] / 32768.0
        stored[path] = ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
    batches = _batches(files, train=True)
    epoch_length = len(batches)
    crops = {}  # (epoch, path) -> the crop
    for step in range(2 * epoch_length):
        batch = next(batches)
        assert batch["input_values"].shape[1] in batches.buckets
        assert batch["input_values"].shape[1] % CFG.frame_stride == 0
        epoch = step // epoch_length
        for row in range(3):
            n = int(batch["attention_mask"][row].sum())
            assert n <= RATE
            assert not batch["input_values"][row, n:].any()
            crop = batch["input_values"][row, :n]
            # Which file and offset: the normalised file (read by soundfile) holding this crop.
            matches = []
            for path, audio in stored.items():
                if n != min(len(audio), RATE):
                    continue
                candidates = np.flatnonzero(np.abs(audio[: len(audio) - n + 1] - crop[0]) < 1e-5)
                matches += [(path, int(start)) for start in candidates
                            if np.allclose(audio[start:start + n], crop, atol=1e-5)]
            assert len(matches) == 1, "a crop must be a slice of exactly one file"
            crops[(epoch, matches[0][0])] = matches[0][1]
    batches.close()
    long_files = [p for p, a in written.items() if len(a) > RATE + 100]
    seen_twice = [p for p in long_files if (0, p) in crops and (1, p) in crops]
    assert seen_twice and any(crops[(0, p)] != crops[(1, p)] for p in seen_twice)


def test_set_state_resumes_the_same_batches_in_worker_processes_too(folder):
    root, _ = folder
    files = audio_files(str(root), "train", eval_fraction=0.0)
    first = _batches(files, train=True)
    for _ in range(3):
        next(first)
    state = first.get_state()
    expected = [next(first) for _ in range(5)]  # crosses into the next epoch
    first.close()
    for processes in (0, 2):  # the crops are the plan's, whoever reads them
        resumed = _batches(files, train=True, processes=processes)
        resumed.set_state(state)
        for want in expected:
            got = next(resumed)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
        resumed.close()


def test_evaluation_is_one_padded_pass_from_the_start_of_each_file(folder):
    root, written = folder
    files = audio_files(str(root), "train", eval_fraction=0.0)
    batches = list(_batches(files, train=False))
    rows = np.concatenate([b["example_mask"] for b in batches])
    assert rows.sum() == len(files) and len(rows) == 3 * -(-len(files) // 3)
    lengths = sorted(int(n) for b in batches for n, real in
                     zip(b["attention_mask"].sum(1), b["example_mask"]) if real)
    assert lengths == sorted(min(len(a), RATE) for a in written.values())
