"""Conversion of transformers' Wav2Vec2ForPreTraining both ways, and what a backbone load skips."""

import warnings

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from tests.tiny_hf import TINY_PRETRAINING, tiny_hf_config
from w2v_jax.hf import CheckpointError, load_pretrained, save_pretrained
from w2v_jax.models import Wav2Vec2Config, Wav2Vec2Model
from w2v_jax.models.pretraining import PretrainingConfig, Wav2Vec2ForPreTraining


def params_of(model):
    return {"/".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.slow
def test_export_loads_in_transformers_with_the_same_outputs(tmp_path):
    config = Wav2Vec2Config.from_hf(tiny_hf_config("layer").to_dict())
    ours = Wav2Vec2ForPreTraining(config, PretrainingConfig(**TINY_PRETRAINING), rngs=nnx.Rngs(3))
    save_pretrained(ours, str(tmp_path / "hf"))
    theirs, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(
        str(tmp_path / "hf"), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys

    rng = np.random.default_rng(0)
    audio = rng.normal(size=(2, 6400)).astype(np.float32)
    mask = np.zeros((2, config.num_frames(6400)), bool)
    mask[:, 3:9] = True
    with torch.no_grad():
        expected = theirs.eval()(torch.from_numpy(audio), mask_time_indices=torch.from_numpy(mask))
    got = jax.jit(lambda a, m: ours(a, None, m))(audio, mask)
    np.testing.assert_allclose(got.projected_states, expected.projected_states.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.projected_quantized_states,
                               expected.projected_quantized_states.numpy(), atol=1e-4)

    back = load_pretrained(str(tmp_path / "hf"), pretraining=True)
    assert back.pretraining == ours.pretraining
    mine, theirs_back = params_of(ours), params_of(back)
    assert mine.keys() == theirs_back.keys()
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs_back[key], err_msg=key)


def test_pretraining_load_keeps_the_heads(hf_pretraining_checkpoints):
    path = hf_pretraining_checkpoints["group"]
    state = transformers.Wav2Vec2ForPreTraining.from_pretrained(path).state_dict()
    model = load_pretrained(path, pretraining=True)
    assert model.pretraining == PretrainingConfig(**TINY_PRETRAINING)
    np.testing.assert_array_equal(model.quantizer.codevectors[...], state["quantizer.codevectors"])
    np.testing.assert_array_equal(model.project_q.kernel[...], state["project_q.weight"].numpy().T)
    np.testing.assert_array_equal(model.project_hid.bias[...], state["project_hid.bias"])


def test_backbone_load_warns_of_the_heads_it_skips(hf_pretraining_checkpoints):
    with pytest.warns(UserWarning, match="skipped 7 task-head tensors: project_hid.bias"):
        model = load_pretrained(hf_pretraining_checkpoints["layer"])
    assert isinstance(model, Wav2Vec2Model)


def test_pretraining_load_of_a_bare_backbone_names_the_missing_heads(hf_checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bare backbone skips nothing, so warns nothing
        load_pretrained(hf_checkpoints["group"])
    with pytest.raises(CheckpointError, match="not a Wav2Vec2ForPreTraining.*quantizer.codevectors"):
        load_pretrained(hf_checkpoints["group"], pretraining=True)
