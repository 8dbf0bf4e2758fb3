"""Our Flax forward against transformers' PyTorch Wav2Vec2Model on the same weights."""

import jax
import numpy as np
import pytest
import transformers

from tests.tiny_hf import transformers_per_utterance
from w2v_jax.hf import load_pretrained

TOLERANCE = 1e-4


def reference_outputs(hf_dir, audio, mask):
    return transformers_per_utterance(transformers.Wav2Vec2Model.from_pretrained(hf_dir), audio, mask)


def max_diff_on_real_frames(ours, theirs, frame_mask):
    return float(np.abs(np.asarray(ours) - theirs)[frame_mask].max())


@pytest.mark.parametrize("variant", ["group", "layer"])
def test_every_output_matches_transformers(hf_checkpoints, audio_batch, variant):
    audio, mask = audio_batch
    reference, frames = reference_outputs(hf_checkpoints[variant], audio, mask)
    model = load_pretrained(hf_checkpoints[variant])
    ours = jax.jit(lambda a, m: model(a, m))(audio, mask)

    frame_mask = np.asarray(ours.frame_mask)
    np.testing.assert_array_equal(frame_mask.sum(-1), frames)
    assert len(ours.hidden_states) == len(reference.hidden_states) == 4
    for layer, (a, b) in enumerate(zip(ours.hidden_states, reference.hidden_states)):
        assert max_diff_on_real_frames(a, b, frame_mask) <= TOLERANCE, f"hidden_states[{layer}]"
    assert max_diff_on_real_frames(ours.last_hidden_state, reference.last_hidden_state,
                                   frame_mask) <= TOLERANCE
    assert max_diff_on_real_frames(ours.extract_features, reference.extract_features,
                                   frame_mask) <= TOLERANCE


@pytest.mark.parametrize("variant", ["group", "layer"])
def test_unrolled_layers_and_remat_compute_the_same_function(hf_checkpoints, audio_batch, variant):
    audio, mask = audio_batch
    reference, _ = reference_outputs(hf_checkpoints[variant], audio, mask)
    model = load_pretrained(hf_checkpoints[variant], scan_layers=False, remat=True)
    ours = jax.jit(lambda a, m: model(a, m))(audio, mask)
    frame_mask = np.asarray(ours.frame_mask)
    for a, b in zip(ours.hidden_states, reference.hidden_states):
        assert max_diff_on_real_frames(a, b, frame_mask) <= TOLERANCE


def test_bfloat16_compute_stays_close(hf_checkpoints, audio_batch):
    audio, mask = audio_batch
    reference, _ = reference_outputs(hf_checkpoints["layer"], audio, mask)
    model = load_pretrained(hf_checkpoints["layer"], dtype="bfloat16")
    ours = jax.jit(lambda a, m: model(a, m))(audio, mask)
    assert ours.last_hidden_state.dtype == np.dtype("bfloat16")
    frame_mask = np.asarray(ours.frame_mask)
    ref = reference.last_hidden_state[frame_mask]
    got = np.asarray(ours.last_hidden_state, np.float32)[frame_mask]
    # bfloat16 keeps 8 mantissa bits: a few percent of the activations' scale.
    assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.999
