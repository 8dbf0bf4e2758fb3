"""The config files: the paper's SpecAugment presets and their argument syntax."""

import pytest

import configs.aishell_large


def test_specaugment_presets_set_the_recipes_values():
    transformers_default = configs.aishell_large.get_config("tone+sex")
    assert dict(transformers_default.tasks) == {"tone": 1.0, "sex": 1.0}
    assert (transformers_default.model.mask_time_prob, transformers_default.model.mask_feature_prob) == (0.05, 0.0)
    fairseq = configs.aishell_large.get_config("finals,specaugment=fairseq")
    assert dict(fairseq.tasks) == {"final": 1.0}
    m = fairseq.model  # fairseq examples/wav2vec/config/finetuning/vox_100h.yaml
    assert (m.mask_time_prob, m.mask_time_length, m.mask_feature_prob, m.mask_feature_length,
            m.activation_dropout) == (0.5, 10, 0.5, 64, 0.1)


def test_an_unknown_option_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"specaugment=transformers\|fairseq"):
        configs.aishell_large.get_config("tone,specaugment=torch")
