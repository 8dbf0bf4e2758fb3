"""Tiny transformers configs of both released wav2vec 2.0 variants, small enough for CI."""

TINY_HF = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
               conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
VARIANTS = {
    "group": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def tiny_hf_config(variant: str, **overrides):
    import transformers
    return transformers.Wav2Vec2Config(**{**TINY_HF, **VARIANTS[variant], **overrides})
