"""Test-wide environment: 8 simulated CPU devices, no network, float32 defaults.

XLA_FLAGS must be set before jax is imported anywhere, hence here.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()

import pytest  # noqa: E402

from tests.tiny_hf import TINY_PRETRAINING, VARIANTS, tiny_hf_config  # noqa: E402


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{variant: dir} of tiny random transformers Wav2Vec2Models saved locally (safetensors)."""
    import torch
    import transformers

    dirs = {}
    for seed, variant in enumerate(VARIANTS):
        torch.manual_seed(seed)
        model = transformers.Wav2Vec2Model(tiny_hf_config(variant)).eval()
        dirs[variant] = str(tmp_path_factory.mktemp(f"hf-{variant}"))
        model.save_pretrained(dirs[variant])
    return dirs


@pytest.fixture(scope="session")
def hf_pretraining_checkpoints(tmp_path_factory):
    """{variant: dir} of tiny random transformers Wav2Vec2ForPreTraining models."""
    import torch
    import transformers

    dirs = {}
    for seed, variant in enumerate(VARIANTS):
        torch.manual_seed(10 + seed)
        config = tiny_hf_config(variant, **TINY_PRETRAINING)
        model = transformers.Wav2Vec2ForPreTraining(config).eval()
        dirs[variant] = str(tmp_path_factory.mktemp(f"hf-pretraining-{variant}"))
        model.save_pretrained(dirs[variant])
    return dirs


@pytest.fixture(scope="session")
def audio_batch():
    """Three utterances of different lengths, zero-padded, with their sample mask."""
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = np.array([16000, 11000, 6400])
    mask = (np.arange(lengths.max())[None] < lengths[:, None]).astype(np.int32)
    audio = (rng.normal(size=mask.shape) * mask).astype(np.float32)
    return audio, mask
