r"""The paper's grid: the pre-trained model and models fine-tuned for tone, finals, sex,
tone+sex and finals+sex, each scored layer by layer with SVCCA on the test split.

  python -m launch.experiment --config=configs/paper.py --workdir=runs/paper \
      --config.train.init=hf:models/wav2vec2-large --config.train.data.dir=data/aishell1
  python -m launch.experiment --config=configs/paper.py:demo --workdir=runs/demo
  python -m launch.experiment --config=configs/paper.py:demo --workdir=W --config.train.data.dir=DIR

ARG: "" (AISHELL-1 with wav2vec 2.0 Large, configs/aishell_large.py) or "demo" (the small
model that ships in models/w2v2-small-cmn, pre-trained on eSpeak voices the demo never uses,
fine-tuned on generated eSpeak NG Mandarin speech: what `python -m launch.demo` runs). The
demo generates its corpus under WORKDIR/corpus unless config.train.data.dir names a corpus
in the AISHELL-1 layout (then nothing is generated).
"""

import os

import ml_collections

import configs.aishell_large
import configs.synthetic_tiny

# The small self-supervised model that ships with the repository (its README.md is the card).
SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "models", "w2v2-small-cmn")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "demo"):
        raise ValueError(f"configs/paper.py argument {arg!r}: use '' (AISHELL-1) or 'demo'")
    demo = arg == "demo"
    c = ml_collections.ConfigDict()
    c.finetune = ("tone", "final", "sex", "tone+sex", "final+sex")
    c.train = (configs.synthetic_tiny if demo else configs.aishell_large).get_config("tone")

    # The corpus made under WORKDIR/corpus when config.train.data.dir is empty:
    # "espeak" (w2v_jax.data.espeak, real synthesised speech) or "formant" (the toy
    # w2v_jax.data.synthetic, for tests that need a corpus in a second).
    c.corpus = ml_collections.ConfigDict()
    c.corpus.generator = "espeak"
    c.corpus.speakers = 40
    c.corpus.utterances = 30
    c.corpus.dev_speakers = 4
    c.corpus.test_speakers = 8  # 8 speakers x 30 utterances: ~4,900 test segments
    c.corpus.seed = 0

    c.extract = ml_collections.ConfigDict()
    c.extract.split = "test"
    c.extract.batch_size = 8
    c.extract.dtype = "float32"

    c.analysis = ml_collections.ConfigDict()
    c.analysis.metrics = ("svcca",)
    c.analysis.probes = True
    c.analysis.bootstrap = 200  # speaker-bootstrap resamples for every interval
    c.analysis.max_samples = 0  # 0: every segment
    c.analysis.log_mel = True  # the 80-band log-mel baseline line beside every curve
    c.analysis.projection_layers = (0, -1)
    c.analysis.umap = True

    c.claims = ml_collections.ConfigDict()
    c.claims.top_fraction = 1 / 3  # "top layers": the last third
    c.claims.keep_fraction = 0.9  # a multi-task model keeps a label at >= 90% of the mono-task SVCCA
    c.claims.same_accuracy = 0.02  # mono vs multi-task accuracy within 2 points is "the same"
    if demo:  # five fine-tunings within ten minutes on 2 CPU cores
        c.train.init = f"model:{SHIPPED_MODEL}"
        c.train.freeze_feature_encoder = True  # phase 2: all but the CNN, as the paper
        c.train.data.dir = ""
        c.train.total_steps = 48  # ~70 s a fine-tuning, half of it compilation and evaluation
        c.train.freeze_steps = 16  # phase 1: the heads alone
        c.train.optimizer.learning_rate = 5e-4
        c.train.eval_every = 48
        c.train.checkpoint_every = 48
        c.analysis.projection_layers = (-1,)
        c.analysis.probes = False  # 8 test speakers: a probe holds out 2, too few for intervals
        c.analysis.umap = False  # ~90 s more; PCA pictures remain (umap=True adds them)
        c.claims.same_accuracy = 0.05  # a few dozen updates on a few speakers: noisier
    return c
