"""fairseq checkpoints: small state dicts laid out with fairseq's key names, saved with torch.save."""

import argparse

import pytest
import torch
import transformers

from tests.test_hf_convert import assert_same_params
from tests.tiny_hf import TINY_HF, TINY_PRETRAINING
from w2v_jax.hf import CheckpointError, load_pretrained
from w2v_jax.hf.fairseq import load_fairseq

# transformers -> fairseq, written out here independently of the importer's table.
TO_FAIRSEQ = (
    ("pos_conv_embed.conv.parametrizations.weight.original0", "pos_conv.0.weight_g"),
    ("pos_conv_embed.conv.parametrizations.weight.original1", "pos_conv.0.weight_v"),
    ("pos_conv_embed.conv.bias", "pos_conv.0.bias"),
    (".conv.", ".0."), ("feature_projection.layer_norm.", "layer_norm."),
    ("feature_projection.projection.", "post_extract_proj."), ("masked_spec_embed", "mask_emb"),
    (".attention.", ".self_attn."),
    ("feed_forward.intermediate_dense", "fc1"), ("feed_forward.output_dense", "fc2"),
    ("quantizer.codevectors", "quantizer.vars"), ("project_hid.", "final_proj."),
)


def fairseq_name(name, group_norm):
    name = name.removeprefix("wav2vec2.")
    if ".layers." in name and ".layer_norm." in name and name.startswith("encoder."):
        name = name.replace(".layer_norm.", ".self_attn_layer_norm.")
    if name.startswith("feature_extractor.") and ".layer_norm." in name:
        name = name.replace(".layer_norm.", ".2." if group_norm else ".2.1.")
    for ours, theirs in TO_FAIRSEQ:
        name = name.replace(ours, theirs)
    return name


def fairseq_cfg(variant):
    return dict(_name="wav2vec2", extractor_mode="default" if variant == "group" else "layer_norm",
                layer_norm_first=variant == "layer", conv_bias=variant == "layer",
                encoder_layers=TINY_HF["num_hidden_layers"], encoder_embed_dim=TINY_HF["hidden_size"],
                encoder_ffn_embed_dim=TINY_HF["intermediate_size"],
                encoder_attention_heads=TINY_HF["num_attention_heads"],
                conv_feature_layers="[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2",
                conv_pos=16, conv_pos_groups=4, latent_vars=TINY_PRETRAINING["num_codevectors_per_group"],
                latent_groups=TINY_PRETRAINING["num_codevector_groups"],
                latent_dim=TINY_PRETRAINING["codevector_dim"],
                final_dim=TINY_PRETRAINING["proj_codevector_dim"])


class Meter:
    """Stands for the fairseq classes a real checkpoint pickles in extra_state."""

    def __init__(self):
        self.sum = 3.0


@pytest.fixture(scope="module")
def fairseq_checkpoints(hf_pretraining_checkpoints, tmp_path_factory):
    """{variant: (pre-training .pt, fine-tuned .pt)}"""
    out = {}
    root = tmp_path_factory.mktemp("fairseq")
    for variant, path in hf_pretraining_checkpoints.items():
        state = transformers.Wav2Vec2ForPreTraining.from_pretrained(path).state_dict()
        pretrained = {fairseq_name(k, variant == "group"): v for k, v in state.items()}
        finetuned = {"w2v_encoder.w2v_model." + k: v for k, v in pretrained.items()
                     if not k.startswith(("quantizer.", "project_q.", "final_proj."))}
        finetuned["w2v_encoder.proj.weight"] = torch.zeros(5, TINY_HF["hidden_size"])
        finetuned["w2v_encoder.proj.bias"] = torch.zeros(5)
        pt, ft = root / f"{variant}-pretrained.pt", root / f"{variant}-finetuned.pt"
        torch.save({"cfg": {"model": fairseq_cfg(variant)}, "model": pretrained,
                    "extra_state": {"meters": {"loss": Meter()}}}, pt)
        # old-style: argparse args, the pre-training args inside a fine-tuned model's
        torch.save({"args": argparse.Namespace(
            arch="wav2vec_ctc", w2v_args=argparse.Namespace(**fairseq_cfg(variant))),
            "model": finetuned}, ft)
        out[variant] = (str(pt), str(ft))
    return out


@pytest.mark.parametrize("variant", ["group", "layer"])
def test_pretraining_checkpoint_keeps_every_tensor(fairseq_checkpoints, hf_pretraining_checkpoints,
                                                    variant):
    ours = load_fairseq(fairseq_checkpoints[variant][0], pretraining=True)
    reference = load_pretrained(hf_pretraining_checkpoints[variant], pretraining=True)
    assert_same_params(ours, reference)
    assert ours.pretraining == reference.pretraining
    for field in ("feat_extract_norm", "do_stable_layer_norm", "conv_bias", "conv_dim",
                  "conv_kernel", "conv_stride", "num_conv_pos_embedding_groups", "hidden_act"):
        assert getattr(ours.config, field) == getattr(reference.config, field), field


@pytest.mark.parametrize("variant", ["group", "layer"])
def test_finetuned_checkpoint_gives_the_backbone(fairseq_checkpoints, hf_pretraining_checkpoints,
                                                 variant):
    with pytest.warns(UserWarning, match="skipped 2 tensors: w2v_encoder.proj.bias, w2v_encoder.proj.weight"):
        ours = load_fairseq(fairseq_checkpoints[variant][1])
    with pytest.warns(UserWarning):
        reference = load_pretrained(hf_pretraining_checkpoints[variant])
    assert_same_params(ours, reference)
    assert ours.config.do_stable_layer_norm == (variant == "layer")


def test_finetuned_checkpoint_has_no_quantizer(fairseq_checkpoints):
    with pytest.raises(CheckpointError, match="missing: .*quantizer.codevectors"):
        load_fairseq(fairseq_checkpoints["group"][1], pretraining=True)


def test_unknown_keys_are_named(fairseq_checkpoints, tmp_path):
    checkpoint = torch.load(fairseq_checkpoints["layer"][0], weights_only=False)
    checkpoint["model"]["target_glu.0.weight"] = torch.zeros(2)
    torch.save(checkpoint, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"no wav2vec 2.0 counterpart: \['target_glu.0.weight'\]"):
        load_fairseq(str(tmp_path / "odd.pt"))
