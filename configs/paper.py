r"""The paper's grid: the pre-trained model and models fine-tuned for tone, finals, sex,
tone+sex and finals+sex, each scored layer by layer with SVCCA on the test split.

  python -m launch.experiment --config=configs/paper.py --workdir=runs/paper \
      --config.train.init=hf:models/wav2vec2-large --config.train.data.dir=data/aishell1
  python -m launch.experiment --config=configs/paper.py:synthetic --workdir=runs/synthetic

ARG: "" (AISHELL-1 with wav2vec 2.0 Large, configs/aishell_large.py) or "synthetic"
(the tiny preset trained from scratch on a synthetic corpus: minutes on a CPU; what
`python -m launch.demo` runs). The synthetic "pre-trained" model is the random
initialisation every fine-tuning starts from: no self-supervised pre-training exists for it.
"""

import ml_collections

import configs.aishell_large
import configs.synthetic_tiny


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "synthetic"):
        raise ValueError(f"configs/paper.py argument {arg!r}: use '' (AISHELL-1) or 'synthetic'")
    synthetic = arg == "synthetic"
    c = ml_collections.ConfigDict()
    c.finetune = ("tone", "final", "sex", "tone+sex", "final+sex")
    c.train = (configs.synthetic_tiny if synthetic else configs.aishell_large).get_config("tone")

    c.synthetic = ml_collections.ConfigDict()
    c.synthetic.enabled = synthetic
    c.synthetic.speakers = 40
    c.synthetic.utterances = 6
    c.synthetic.seed = 0

    c.extract = ml_collections.ConfigDict()
    c.extract.split = "test"
    c.extract.batch_size = 8
    c.extract.dtype = "float32"

    c.analysis = ml_collections.ConfigDict()
    c.analysis.metrics = ("svcca",)
    c.analysis.probes = True
    c.analysis.bootstrap = 0  # speaker-bootstrap resamples for SVCCA intervals
    c.analysis.max_samples = 0  # 0: every segment
    c.analysis.projection_layers = (0, -1)
    c.analysis.umap = True

    c.claims = ml_collections.ConfigDict()
    c.claims.top_fraction = 1 / 3  # "top layers": the last third
    c.claims.keep_fraction = 0.9  # a multi-task model keeps a label at >= 90% of the mono-task SVCCA
    c.claims.same_accuracy = 0.02  # mono vs multi-task accuracy within 2 points is "the same"
    if synthetic:  # the demo: five fine-tunings within about ten minutes on 2 CPU cores
        c.train.total_steps = 150
        c.train.eval_every = 75
        c.train.checkpoint_every = 150
        c.analysis.projection_layers = (-1,)
        c.claims.same_accuracy = 0.05  # a few hundred steps on a few speakers: noisier
    return c
