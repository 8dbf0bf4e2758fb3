r"""Seconds of audio per second that one host's input pipeline delivers, against what a Large
bfloat16 step consumes on one H100 at 45 % MFU (the analytic count of w2v_jax/flops.py).

  python -m bench.input                                   # a generated corpus, prepared here
  python -m bench.input --data_dir=data/aishell1_tfds --split=train

It reads the prepared (TFDS array_record) dataset through data.Batches, as fine-tuning does:
training order, per-utterance normalisation, labels and segments, this host's share of every
global batch (--process_count), for --seconds with each of --workers threads and then each of
--processes worker processes (config data.processes; their start is not timed). Delivered
audio counts the real samples (the attention mask), not the padding; per CPU second counts the
CPU time of this process and its workers, so it is what one quiet core delivers. A loader
faster than the consumption (ratio > 1) is not the bottleneck of one device; a host with k
devices needs a ratio above k. Measure on a quiet machine: other jobs on the CPUs lower the
figures, and n workers can only show scaling on at least n free cores.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("data_dir", "", "A prepared dataset (launch.prepare_data); empty: generate one.")
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_integer("speakers", 8, "Generated corpus (no --data_dir): speakers.")
flags.DEFINE_integer("utterances", 40, "Generated corpus: utterances per speaker.")
flags.DEFINE_integer("batch_size", 32, "Global batch (configs/aishell_large.py).")
flags.DEFINE_integer("process_count", 1, "Hosts sharing each global batch; this one reads its share.")
flags.DEFINE_list("workers", ["0", "1", "2"], "Worker thread counts to measure (processes=0).")
flags.DEFINE_list("processes", ["1", "2"], "Worker process counts to measure (data.processes).")
flags.DEFINE_float("seconds", 20.0, "Measuring time per worker count.")
flags.DEFINE_string("preset", "large-lv60", "Model preset whose step consumes the audio.")
flags.DEFINE_float("mfu", 0.45, "Model FLOP utilisation of the consuming step.")
flags.DEFINE_float("peak_tflops", 989.0, "The device's dense bf16 peak (H100 SXM).")
flags.DEFINE_float("utterance_seconds", 5.0, "Padded utterance length of the fine-tuning step.")
flags.DEFINE_float("crop_seconds", 15.625, "Pre-training crop (configs' data.max_seconds).")
FLAGS = flags.FLAGS
RATE = 16000
CLASSES = 5 + 40 + 2  # tone, finals and sex heads


def consumed_per_second(config) -> dict[str, float]:
    """Audio seconds per second one device's steps take in, fine-tuning and pre-training."""
    from w2v_jax import flops

    device = FLAGS.mfu * FLAGS.peak_tflops * 1e12
    ft = flops.fine_tune_step_flops(config, int(FLAGS.utterance_seconds * RATE), 1,
                                    num_classes=CLASSES) / FLAGS.utterance_seconds
    pt = flops.pretrain_step_flops(config, int(FLAGS.crop_seconds * RATE), 1) / FLAGS.crop_seconds
    return {"fine-tuning": device / ft, "pre-training": device / pt}


def delivered_per_second(data, cfg, workers: int, processes: int) -> tuple[float, float, int]:
    """(audio seconds delivered per wall second, per CPU second of this process and its worker
    processes, batches) reading for FLAGS.seconds."""
    from w2v_jax.data import Batches
    from w2v_jax.data import labels as L

    batches = Batches(data, cfg, batch_size=FLAGS.batch_size // FLAGS.process_count, train=True,
                      tasks=L.TRAINING_TASKS, process_count=FLAGS.process_count,
                      workers=workers, processes=processes, prefetch=max(2, workers, processes))
    try:
        for _ in range(max(1, 2 * processes)):  # the first plan and reads; every worker started
            next(batches)
        samples, count, start, cpu = 0, 0, time.perf_counter(), cpu_seconds()
        while time.perf_counter() - start < FLAGS.seconds:
            samples += int(next(batches)["attention_mask"].sum())
            count += 1
        audio, wall, used = samples / RATE, time.perf_counter() - start, cpu_seconds() - cpu
        return audio / wall, audio / used, count
    finally:
        batches.close()


def cpu_seconds() -> float:
    """CPU time so far of this process and its live worker processes."""
    import multiprocessing

    import psutil

    processes = [psutil.Process(), *(psutil.Process(child.pid)
                                     for child in multiprocessing.active_children())]
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def main(argv):
    del argv
    from w2v_jax.data import tfds_aishell1
    from w2v_jax.models import Wav2Vec2Config

    config = Wav2Vec2Config.preset(FLAGS.preset)
    scratch = None if FLAGS.data_dir else tempfile.mkdtemp(prefix="bench-input-")
    try:
        data_dir = FLAGS.data_dir or os.path.join(scratch, "tfds")
        if scratch:
            from w2v_jax.data import synthetic
            corpus = os.path.join(scratch, "corpus")
            synthetic.make_corpus(corpus, num_speakers=FLAGS.speakers,
                                  utterances_per_speaker=FLAGS.utterances, seed=0)
            tfds_aishell1.prepare(corpus, data_dir, cfg=config)
        measure(tfds_aishell1.open_prepared(data_dir, FLAGS.split, config), data_dir, config)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def measure(data, data_dir: str, config) -> None:
    print(f"{data_dir} [{FLAGS.split}]: {len(data)} utterances, mean "
          f"{data.lengths.mean() / RATE:.2f} s; batch {FLAGS.batch_size} over "
          f"{FLAGS.process_count} host(s); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    consumed = consumed_per_second(config)
    print(f"{FLAGS.preset} bf16 at {FLAGS.mfu:.0%} MFU of {FLAGS.peak_tflops:g} TFLOP/s consumes "
          + ", ".join(f"{v:,.0f} audio s/s ({k})" for k, v in consumed.items()))
    need = max(consumed.values())
    settings = ([(f"threads={w}", int(w), 0) for w in FLAGS.workers]
                + [(f"processes={p}", 0, int(p)) for p in FLAGS.processes])
    for name, workers, processes in settings:
        rate, per_cpu, count = delivered_per_second(data, config, workers, processes)
        print(f"{name}: {rate:,.0f} audio s/s delivered, {rate / need:.2f} x one device's need; "
              f"{per_cpu:,.0f} audio s per CPU second, so one device needs {need / per_cpu:.1f} "
              f"quiet cores ({count} batches)")


if __name__ == "__main__":
    app.run(main)
