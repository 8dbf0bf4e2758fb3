"""Checkpoint conversion: key styles, file formats, strictness and round trips."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.torch import load_file, save_file

from tests.tiny_hf import tiny_hf_config, transformers_per_utterance
from w2v_jax import checkpoint
from w2v_jax.hf import CheckpointError, load_pretrained, save_pretrained
from w2v_jax.models import ConfigError, Wav2Vec2Config, Wav2Vec2Model


def params_of(model):
    return {"/".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_same_params(a, b):
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def copy_checkpoint(src, dst, edit):
    """A copy of a safetensors checkpoint whose state dict went through `edit`."""
    os.makedirs(dst)
    shutil.copy(os.path.join(src, "config.json"), dst)
    state = load_file(os.path.join(src, "model.safetensors"))
    save_file(edit(dict(state)), os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["group", "layer"])
def test_export_loads_in_transformers_and_round_trips_exactly(tmp_path, audio_batch, variant):
    config = Wav2Vec2Config.from_hf(tiny_hf_config(variant).to_dict())
    ours = Wav2Vec2Model(config, rngs=nnx.Rngs(7))
    save_pretrained(ours, str(tmp_path / "hf"))

    theirs, info = transformers.Wav2Vec2Model.from_pretrained(str(tmp_path / "hf"),
                                                              output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    audio, mask = audio_batch
    expected, _ = transformers_per_utterance(theirs, audio, mask)
    got = jax.jit(lambda a, m: ours(a, m))(audio, mask)
    frame_mask = np.asarray(got.frame_mask)
    diff = np.abs(np.asarray(got.last_hidden_state) - expected.last_hidden_state)[frame_mask]
    assert diff.max() <= 1e-4

    assert_same_params(load_pretrained(str(tmp_path / "hf")), ours)


def test_old_weight_norm_keys_in_pytorch_bin(hf_checkpoints, tmp_path):
    src = hf_checkpoints["group"]
    state = load_file(os.path.join(src, "model.safetensors"))
    prefix = "encoder.pos_conv_embed.conv."
    state[prefix + "weight_g"] = state.pop(prefix + "parametrizations.weight.original0")
    state[prefix + "weight_v"] = state.pop(prefix + "parametrizations.weight.original1")
    os.makedirs(tmp_path / "old")
    shutil.copy(os.path.join(src, "config.json"), tmp_path / "old")
    torch.save(state, tmp_path / "old" / "pytorch_model.bin")
    assert_same_params(load_pretrained(str(tmp_path / "old")), load_pretrained(src))


def test_sharded_safetensors(hf_checkpoints, tmp_path):
    src = hf_checkpoints["layer"]
    transformers.Wav2Vec2Model.from_pretrained(src).save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert_same_params(load_pretrained(str(tmp_path)), load_pretrained(src))


def test_task_model_prefix_and_heads(hf_checkpoints, tmp_path):
    torch.manual_seed(3)
    ctc = transformers.Wav2Vec2ForCTC(tiny_hf_config("layer", vocab_size=12))
    ctc.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="skipped 2 task-head tensors: lm_head.bias, lm_head.weight"):
        model = load_pretrained(str(tmp_path))
    expected = transformers.Wav2Vec2Model.from_pretrained(str(tmp_path))
    np.testing.assert_array_equal(
        params_of(model)["feature_projection/projection/kernel"],
        expected.feature_projection.projection.weight.detach().numpy().T)


def test_missing_key_is_named(hf_checkpoints, tmp_path):
    key = "encoder.layers.1.feed_forward.output_dense.bias"
    bad = copy_checkpoint(hf_checkpoints["group"], tmp_path / "bad",
                          lambda s: {k: v for k, v in s.items() if k != key})
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_pretrained(str(bad))


def test_unexpected_key_is_named(hf_checkpoints, tmp_path):
    bad = copy_checkpoint(hf_checkpoints["group"], tmp_path / "bad",
                          lambda s: {**s, "encoder.extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"encoder\.extra\.weight"):
        load_pretrained(str(bad))


@pytest.mark.parametrize("field,value", [("feat_extract_norm", "batch"), ("add_adapter", True),
                                         ("architectures", ["HubertModel"]), ("hidden_act", "swish")])
def test_unsupported_config_values_are_named(hf_checkpoints, tmp_path, field, value):
    os.makedirs(tmp_path / "bad")
    with open(os.path.join(hf_checkpoints["group"], "config.json")) as f:
        config = json.load(f)
    config[field] = value
    with open(tmp_path / "bad" / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(ConfigError, match=field):
        load_pretrained(str(tmp_path / "bad"))


@pytest.mark.slow
def test_convert_cli_round_trip(hf_checkpoints, tmp_path):
    src = hf_checkpoints["layer"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "launch.convert", *args],
                                       check=True, env=env, capture_output=True)
    run(f"--hf_dir={src}", f"--output_dir={tmp_path / 'ours'}")
    assert_same_params(checkpoint.load_model(str(tmp_path / "ours")), load_pretrained(src))
    run("--to_hf", f"--checkpoint={tmp_path / 'ours'}", f"--output_dir={tmp_path / 'back'}")
    original, back = load_file(os.path.join(src, "model.safetensors")), \
        load_file(str(tmp_path / "back" / "model.safetensors"))
    assert original.keys() == back.keys()
    for key in original:
        torch.testing.assert_close(back[key], original[key], rtol=0, atol=0, msg=key)


def test_save_model_refuses_to_overwrite(tmp_path):
    model = Wav2Vec2Model(Wav2Vec2Config.preset("tiny"), rngs=nnx.Rngs(0))
    checkpoint.save_model(model, str(tmp_path / "m"))
    with pytest.raises(FileExistsError):
        checkpoint.save_model(model, str(tmp_path / "m"))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging dir left behind


def test_spec_augment_on_or_off_never_changes_what_loads(hf_checkpoints, tmp_path):
    """transformers keeps masked_spec_embed only while SpecAugment is on; ours always has it."""
    torch.manual_seed(5)
    off = transformers.Wav2Vec2Model(tiny_hf_config("layer", mask_time_prob=0.0))
    assert "masked_spec_embed" not in off.state_dict()
    off.save_pretrained(tmp_path / "off")
    loaded = load_pretrained(str(tmp_path / "off"), mask_time_prob=0.1)  # a run turning it on
    assert loaded.masked_spec_embed[...].shape == (loaded.config.hidden_size,)

    # A checkpoint holding it, loaded with SpecAugment off, keeps it and exports without it.
    model = load_pretrained(hf_checkpoints["layer"], mask_time_prob=0.0)
    np.testing.assert_array_equal(
        model.masked_spec_embed[...],
        load_file(os.path.join(hf_checkpoints["layer"], "model.safetensors"))["masked_spec_embed"])
    save_pretrained(model, str(tmp_path / "export"))
    _, info = transformers.Wav2Vec2Model.from_pretrained(str(tmp_path / "export"),
                                                         output_loading_info=True)
    assert not any(info.values()), info

    # Our own model directories restore across the switch too.
    checkpoint.save_model(model, str(tmp_path / "ours"))
    assert_same_params(checkpoint.load_model(str(tmp_path / "ours"), mask_time_prob=0.2), model)
