"""Analytic FLOP counts of wav2vec 2.0 steps: the one counter behind every MFU figure.

Counted: 2 x multiply-adds of every convolution and matmul (feature encoder, feature
projection, positional conv, q/k/v/out projections, QK^T and PV, feed-forward, task heads,
the pre-training quantizer and contrastive logits). Not counted: norms, activations,
softmax, dropout, the optimizer (O(parameters), not O(frames x parameters)). The counts
agree with XLA's cost analysis to within those elementwise operations (tests/test_flops.py).

A backward pass costs twice its forward for every matmul whose weight is trained (the
input gradient and the weight gradient), once for a frozen one inside the network (input
gradient only), and nothing below the lowest trained weight: a frozen feature encoder is
run forward only, and the first convolution never needs the gradient of the audio.
These are model FLOPs (MFU's numerator): rematerialisation's recomputed forward is
work the device does but not work the model needs, and is left out.
"""

from __future__ import annotations

from w2v_jax.models.config import Wav2Vec2Config


def conv_flops(config: Wav2Vec2Config, num_samples: int) -> list[float]:
    """Per feature-encoder convolution, the FLOPs of one utterance of `num_samples`."""
    flops, length, channels = [], num_samples, 1
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride):
        length = (length - kernel) // stride + 1
        flops.append(2.0 * length * kernel * channels * dim)
        channels = dim
    return flops


def forward_flops(config: Wav2Vec2Config, num_samples: int, *, num_classes: int = 0) -> dict[str, float]:
    """FLOPs of one utterance's forward, by part; `num_classes` summed over the task heads."""
    frames = int(config.num_frames(num_samples))
    d, f = config.hidden_size, config.intermediate_size
    layers = config.num_hidden_layers
    pos_kernel = config.num_conv_pos_embeddings
    return {
        "feature_encoder": sum(conv_flops(config, num_samples)),
        "feature_projection": 2.0 * frames * config.conv_dim[-1] * d,
        "positional_conv": 2.0 * frames * pos_kernel * (d // config.num_conv_pos_embedding_groups) * d,
        "attention_projections": layers * 2.0 * frames * 4 * d * d,
        "attention_core": layers * 2.0 * 2 * frames * frames * d,  # QK^T and PV
        "feed_forward": layers * 2.0 * frames * 2 * d * f,
        "heads": 2.0 * frames * d * num_classes,
    }


def fine_tune_step_flops(config: Wav2Vec2Config, num_samples: int, batch: int, *,
                         num_classes: int = 0, freeze_feature_encoder: bool = True) -> float:
    """Model FLOPs of one fine-tuning step (forward and backward) on `batch` utterances
    padded to `num_samples`: the transformer and heads trained, the CNN frozen or not."""
    parts = forward_flops(config, num_samples, num_classes=num_classes)
    cnn = parts.pop("feature_encoder")
    total = 3 * sum(parts.values())
    total += cnn if freeze_feature_encoder else _trained_cnn(config, num_samples)
    return batch * total


def pretrain_forward_flops(config: Wav2Vec2Config, num_samples: int, *, num_negatives: int = 100,
                           codevector_dim: int = 768, proj_codevector_dim: int = 768,
                           num_codevector_groups: int = 2,
                           num_codevectors_per_group: int = 320) -> dict[str, float]:
    """The forward's extra parts in pre-training (transformers' Wav2Vec2ForPreTraining fields and
    their large-lv60 values): the quantizer on every frame, both projections, and the cosine
    similarities of each frame with its target and `num_negatives` distractors."""
    frames = int(config.num_frames(num_samples))
    codewords = num_codevector_groups * num_codevectors_per_group
    return {
        "quantizer_logits": 2.0 * frames * config.conv_dim[-1] * codewords,
        # the Gumbel one-hot times each group's codebook (transformers multiplies and sums)
        "quantizer_codevectors": 2.0 * frames * codewords * codevector_dim // num_codevector_groups,
        "project_q": 2.0 * frames * codevector_dim * proj_codevector_dim,
        "project_hid": 2.0 * frames * config.hidden_size * proj_codevector_dim,
        "contrastive_logits": 2.0 * frames * (1 + num_negatives) * proj_codevector_dim,
    }


def pretrain_step_flops(config: Wav2Vec2Config, num_samples: int, batch: int, **pretrain) -> float:
    """Model FLOPs of one pre-training step: everything trained, the CNN included."""
    parts = forward_flops(config, num_samples)
    del parts["feature_encoder"]
    extra = pretrain_forward_flops(config, num_samples, **pretrain)
    return batch * (3 * (sum(parts.values()) + sum(extra.values()))
                    + _trained_cnn(config, num_samples))


def _trained_cnn(config: Wav2Vec2Config, num_samples: int) -> float:
    """A trained feature encoder: forward, weight gradients, and input gradients of every
    convolution but the first (nothing needs the audio's gradient)."""
    convs = conv_flops(config, num_samples)
    return 3 * sum(convs) - convs[0]


def frames_per_step(config: Wav2Vec2Config, num_samples: int, batch: int) -> int:
    return batch * int(config.num_frames(num_samples))
