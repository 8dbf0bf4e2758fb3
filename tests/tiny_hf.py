"""Tiny transformers configs of both released wav2vec 2.0 variants, small enough for CI."""

TINY_HF = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
               conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
VARIANTS = {
    "group": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}

# Quantizer and projections of a tiny Wav2Vec2ForPreTraining (transformers' field names).
TINY_PRETRAINING = dict(num_codevector_groups=2, num_codevectors_per_group=8, codevector_dim=16,
                        proj_codevector_dim=12)


def tiny_hf_config(variant: str, **overrides):
    import transformers
    return transformers.Wav2Vec2Config(**{**TINY_HF, **VARIANTS[variant], **overrides})


def transformers_per_utterance(model, audio, mask):
    """transformers' outputs for each utterance alone (unpadded, no mask), zero-padded into
    a batch like ours: returns (outputs with .hidden_states, .last_hidden_state and
    .extract_features as numpy arrays, frames per row).

    Our padded batch must reproduce this on every real frame. For layer-norm models it is
    also what transformers gives on the padded batch; for group-norm models transformers'
    padded batch differs, because its first conv's group norm counts the padding.
    """
    import types

    import numpy as np
    import torch

    model = model.eval()
    lengths = mask.sum(-1)
    frames = model._get_feat_extract_output_lengths(torch.from_numpy(lengths)).numpy()
    with torch.no_grad():
        rows = [model(torch.from_numpy(utterance[None, :length]), output_hidden_states=True)
                for utterance, length in zip(audio, lengths)]

    def batch(pick):
        padded = np.zeros((len(rows), frames.max(), pick(rows[0]).shape[-1]), np.float32)
        for i, out in enumerate(rows):
            padded[i, :frames[i]] = pick(out)[0].numpy()
        return padded

    outputs = types.SimpleNamespace(
        hidden_states=[batch(lambda out, i=i: out.hidden_states[i])
                       for i in range(len(rows[0].hidden_states))],
        last_hidden_state=batch(lambda out: out.last_hidden_state),
        extract_features=batch(lambda out: out.extract_features))
    return outputs, frames


def check_transformers_export(model_dir: str, out_dir: str, env: dict, seconds: float = 1.0):
    """`launch.convert --to_hf` of our pre-training model directory: transformers'
    Wav2Vec2ForPreTraining loads it with no missing or unexpected key and computes the same
    projected states (eval mode, a fixed span mask) as our model."""
    import os
    import subprocess
    import sys

    import numpy as np
    import torch
    import transformers

    from w2v_jax import checkpoint

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "launch.convert", "--to_hf",
                             f"--checkpoint={model_dir}", f"--output_dir={out_dir}"],
                            env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    hf, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(str(out_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ours = checkpoint.load_pretraining_model(str(model_dir))
    samples = int(16000 * seconds)
    audio = np.random.default_rng(0).standard_normal((2, samples)).astype(np.float32)
    mask = np.zeros((2, ours.config.num_frames(samples)), bool)
    mask[:, 10:20] = True
    with torch.no_grad():
        expected = hf.eval()(torch.from_numpy(audio), mask_time_indices=torch.from_numpy(mask))
    got = ours(audio, None, mask, deterministic=True)
    np.testing.assert_allclose(np.asarray(got.projected_states), expected.projected_states.numpy(),
                               atol=2e-4, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(got.projected_quantized_states),
                               expected.projected_quantized_states.numpy(), atol=2e-4, rtol=2e-3)
