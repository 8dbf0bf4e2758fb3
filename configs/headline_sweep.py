r"""How the paper's headline depends on fine-tuning: length, depth and learning rate.

The headline: fine-tuning for tone lowers sex SVCCA in the top layers (irrelevant
information is normalised away). Each point of this sweep fine-tunes the shipped model
for tone alone, from one shared eSpeak corpus, and runs the experiment's unchanged analysis
(speaker-bootstrap intervals, verdicts); WORKDIR/sweep.md tabulates that claim's estimate,
interval and verdict at every point, beside the "tone rises" claim (did the fine-tuning take?)
and the test accuracy.

  python -m launch.sweep --config=configs/headline_sweep.py:cpu --workdir=/tmp/w2v-jax/sweep
  python -m launch.sweep --config=configs/headline_sweep.py --workdir=runs/sweep   # an accelerator

ARG: "" (the full sweep: up to 3,000 updates a point) or "cpu" (up to 450; 37 minutes on 2
cores; its answer on the shipped model is docs/headline_sweep.md). The design is one factor
at a time around a centre point (7 fine-tunings):
  length  total updates; the heads alone for the first `heads_fraction` of them (phase 1)
  depth   "heads" (phase 1 only: the backbone never moves), "encoder" (phase 2 trains all
          but the CNN, the paper's choice), "all" (the CNN too)
  lr      the peak learning rate of both phases
The analysis is the experiment's, fixed in advance: never tuned to make a claim hold.
"""

import ml_collections

import configs.paper


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "cpu"):
        raise ValueError(f"configs/headline_sweep.py argument {arg!r}: use '' or 'cpu'")
    c = configs.paper.get_config("demo")
    c.finetune = ("tone",)
    # The demo's 40 voices (the shipped model heard none of them), a third of them tested:
    # more test speakers than the demo's 8 for narrower intervals.
    c.corpus.update(speakers=40, utterances=30, dev_speakers=4, test_speakers=12)
    c.analysis.bootstrap = 400

    c.sweep = ml_collections.ConfigDict()
    c.sweep.heads_fraction = 1 / 6  # phase 1's share of every run (the issue's 50 of 300)
    c.sweep.evaluations = 3  # dev evaluations (and checkpoints) per run; the best is analysed
    if arg == "cpu":
        c.sweep.centre = ml_collections.ConfigDict(
            {"total_steps": 150, "depth": "encoder", "learning_rate": 5e-4})
        c.sweep.total_steps = (48, 150, 450)
    else:
        c.sweep.centre = ml_collections.ConfigDict(
            {"total_steps": 1000, "depth": "encoder", "learning_rate": 5e-4})
        c.sweep.total_steps = (300, 1000, 3000)
    c.sweep.depth = ("heads", "encoder", "all")
    c.sweep.learning_rate = (1e-4, 5e-4, 2e-3)
    return c
