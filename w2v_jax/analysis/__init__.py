"""Layer-wise analysis of embeddings: SVCCA/PWCCA/CKA kernels, bootstrap CIs, probes.

All metric kernels take samples-by-features arrays, return 0-d (or per-layer)
arrays, and are jittable; see DESIGN.md "SVCCA, precisely" for the contract.
Figures live in `w2v_jax.analysis.plots` (not imported here: matplotlib/umap are slow).
"""

from w2v_jax.analysis.bootstrap import (TooFewSpeakers, bootstrap_layers, rate_bootstrap,
                                        resample_counts)
from w2v_jax.analysis.cca import pwcca, pwcca_layers, svcca, svcca_layers
from w2v_jax.analysis.checks import one_hot
from w2v_jax.analysis.cka import cka, cka_layers
from w2v_jax.analysis.probes import probe_layers, speaker_split

__all__ = ["TooFewSpeakers", "bootstrap_layers", "cka", "cka_layers", "one_hot", "probe_layers",
           "pwcca", "pwcca_layers", "rate_bootstrap", "resample_counts", "speaker_split", "svcca",
           "svcca_layers"]
