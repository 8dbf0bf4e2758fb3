"""The input pipeline: shapes, determinism, resumption, sharding, evaluation padding."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from tests.data_fixtures import cfg, prepared_dataset, synthetic_corpus  # noqa: F401

from w2v_jax.data import aishell, labels as L, pipeline, sources, tfds_aishell1


@pytest.fixture(scope="module")
def data(synthetic_corpus, cfg):
    """All 24 synthetic utterances as one in-memory split."""
    corpus = aishell.Corpus(synthetic_corpus)
    examples = [e for split in aishell.SPLITS for e in aishell.load_split(corpus, split, cfg)]
    return sources.from_examples(examples, "all", cfg)


def _ids(batch):
    return batch["index"].tolist()


def test_bucket_lengths(cfg):
    lengths = [5000, 6000, 7000, 16000, 31999]
    # quantiles 'higher' of 5 values at 1/2 .. 2/2 -> 7000 and 31999, rounded up to 320s (min 400)
    assert pipeline.bucket_lengths(lengths, cfg, num_buckets=2) == (7040, 32000)


def test_batch_contents(data, cfg):
    batches = pipeline.Batches(data, cfg, batch_size=4, train=True, seed=0, prefetch=0)
    shapes = set()
    for _ in range(len(batches)):
        batch = next(batches)
        b, s = batch["input_values"].shape
        shapes.add(s)
        assert b == 4 and s % cfg.frame_stride == 0 and s in batches.buckets
        assert batch["input_values"].dtype == np.float32 and batch["attention_mask"].dtype == np.int32
        assert batch["labels/tone"].shape == (4, cfg.num_frames(s))
        assert batch["example_mask"].all()
        for row, index in enumerate(batch["index"]):
            example = data.source[index]
            n = len(example["audio"])
            assert batch["attention_mask"][row].sum() == n and batch["attention_mask"][row, :n].all()
            assert batch["id"][row] == example["id"]
            assert np.all(batch["input_values"][row, n:] == 0)
            values = batch["input_values"][row, :n]  # normalised per utterance
            assert abs(values.mean()) < 1e-3 and abs(values.std() - 1) < 1e-2
            for task in L.TASKS:
                frames = example["frames"][task]
                assert batch[f"labels/{task}"][row, :len(frames)].tolist() == frames.tolist()
                assert np.all(batch[f"labels/{task}"][row, len(frames):] == -1)
            k = len(example["segments"]["frame"])
            assert batch["segments/frame"][row, :k].tolist() == example["segments"]["frame"].tolist()
            assert np.all(batch["segments/frame"][row, k:] == -1)
    assert len(shapes) <= 8 and batches.get_state()["step"] == 0 and batches.get_state()["epoch"] == 1
    batches.close()


def test_same_seed_same_batches_across_epochs(data, cfg):
    make = lambda seed: pipeline.Batches(data, cfg, batch_size=5, train=True, seed=seed)
    a, b, c = make(1), make(1), make(2)
    assert len(a) == 4  # 24 // 5 global batches per epoch; the remainder is dropped
    run_a = [_ids(next(a)) for _ in range(10)]  # 2.5 epochs
    assert run_a == [_ids(next(b)) for _ in range(10)]
    assert run_a != [_ids(next(c)) for _ in range(10)]
    epoch0 = sum(run_a[:4], [])
    assert len(set(epoch0)) == 20  # no example twice within an epoch
    assert run_a[:4] != run_a[4:8]  # epochs reshuffle
    for it in (a, b, c):
        it.close()


def test_resume_from_saved_state(data, cfg):
    first = pipeline.Batches(data, cfg, batch_size=3, train=True, seed=4)
    for _ in range(6):
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    assert state["epoch"] == 0 and state["step"] == 6
    expected = [next(first) for _ in range(7)]  # crosses into epoch 1 (8 batches per epoch)
    resumed = pipeline.Batches(data, cfg, batch_size=3, train=True, seed=4)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        assert _ids(got) == _ids(want)
        np.testing.assert_array_equal(got["input_values"], want["input_values"])
        np.testing.assert_array_equal(got["labels/final"], want["labels/final"])
    assert resumed.get_state() == first.get_state()
    with pytest.raises(ValueError, match="seed"):
        pipeline.Batches(data, cfg, batch_size=3, train=True, seed=5).set_state(state)
    first.close()
    resumed.close()


def test_multiprocess_eval_covers_every_example_once(data, cfg):
    count = 3  # global batch 3 x 5 = 15: 2 steps, the second with 6 padding slots
    seen, shapes = [], {}
    for p in range(count):
        batches = pipeline.Batches(data, cfg, batch_size=5, train=False, process_index=p,
                                   process_count=count)
        for step, batch in enumerate(batches):
            shapes.setdefault(step, set()).add(batch["input_values"].shape)
            mask = batch["example_mask"]
            assert np.all(batch["index"][~mask] == -1) and np.all(batch["labels/tone"][~mask] == -1)
            assert np.all(batch["segments/frame"][~mask] == -1)
            seen += batch["index"][mask].tolist()
        assert batches.get_state()["step"] == 2  # ceil(24 / 15) steps
        with pytest.raises(StopIteration):
            next(batches)
    assert sorted(seen) == list(range(24))
    assert all(len(s) == 1 for s in shapes.values())  # every process pads a step alike


def test_multiprocess_training_shards_are_disjoint(data, cfg):
    epochs = {}
    for p in range(4):
        batches = pipeline.Batches(data, cfg, batch_size=2, train=True, seed=9, process_index=p,
                                   process_count=4)
        epochs[p] = [_ids(next(batches)) for _ in range(len(batches))]
    flat = [i for p in epochs for batch in epochs[p] for i in batch]
    assert len(flat) == len(set(flat)) == 24  # 3 steps x 4 processes x 2
    single = pipeline.Batches(data, cfg, batch_size=8, train=True, seed=9)
    for step in range(3):  # the same plan as one process with the global batch
        assert sorted(_ids(next(single))) == sorted(sum((epochs[p][step] for p in range(4)), []))


def test_segment_rows_map_to_the_segment_table(data, cfg):
    table = sources.segment_table(data)
    row_of = {(u, s): r for r, (u, s) in enumerate(zip(table["utterance"], table["segment"]))}
    batches = pipeline.Batches(data, cfg, batch_size=7, train=False)
    n_rows = 0
    for batch in batches:
        rows = pipeline.segment_rows(batch)
        for j in range(len(rows["frame"])):
            r = row_of[(rows["utterance"][j], rows["segment"][j])]
            assert rows["frame"][j] == table["frame"][r] and rows["speaker"][j] == table["speaker"][r]
            for task in L.TASKS:
                assert rows[task][j] == table[task][r]
            # the central frame's label in the frame labels agrees with the segment's label
            assert batch["labels/phone"][rows["batch_row"][j], rows["frame"][j]] == rows["phone"][j]
        n_rows += len(rows["frame"])
    assert n_rows == len(table["frame"]) == data.num_segments.sum()
    assert set(table["sex"].tolist()) == {0, 1}  # F and M


def test_prepared_dataset_through_pipeline(prepared_dataset, cfg):
    data = tfds_aishell1.open_prepared(prepared_dataset[0], "train", cfg)
    batches = pipeline.Batches(data, cfg, batch_size=4, train=False, tasks=L.TRAINING_TASKS)
    got = [batch for batch in batches]
    assert sum(int(b["example_mask"].sum()) for b in got) == 8
    assert set(k for k in got[0] if k.startswith("labels/")) == {"labels/tone", "labels/final", "labels/sex"}
    assert all(isinstance(i, str) and i.startswith("SYN000S000") for i in got[0]["id"])
    assert not any(v.dtype.hasobject for b in got for v in b.values())  # cheap between processes


def test_worker_threads_change_neither_order_nor_resume(prepared_dataset, cfg):  # noqa: F811
    """Over the array_record dataset: batches assembled by 3 threads, 4 ahead, are those the
    caller's thread assembles one at a time (and planned_batch computes), and a resume
    mid-queue continues the same."""
    data = tfds_aishell1.open_prepared(prepared_dataset[0], "train", cfg)

    def make(workers, prefetch):
        return pipeline.Batches(data, cfg, batch_size=2, train=True, seed=1, num_buckets=2,
                                workers=workers, prefetch=prefetch)

    serial, threaded = make(0, 0), make(3, 4)
    want = [next(serial) for _ in range(10)]  # 4 batches an epoch: crosses two epochs
    got = [next(threaded) for _ in range(4)]
    state = threaded.get_state()
    threaded.close()
    resumed = make(3, 4)
    resumed.set_state(state)
    got += [next(resumed) for _ in range(6)]
    for position in (0, 5, 9):  # what a worker process computes from the plan alone
        np.testing.assert_array_equal(serial.planned_batch(position)["input_values"],
                                      want[position]["input_values"])
    for g, w in zip(got, want, strict=True):
        assert _ids(g) == _ids(w)
        np.testing.assert_array_equal(g["input_values"], w["input_values"])
        np.testing.assert_array_equal(g["labels/tone"], w["labels/tone"])
    serial.close()
    resumed.close()


def _grain_workers():
    return [c for c in multiprocessing.active_children() if c.name.startswith("grain-")]


def _assert_same_batches(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in w:
            assert g[key].dtype == w[key].dtype and np.array_equal(g[key], w[key]), key


def test_worker_processes_deliver_the_plan_and_resume(prepared_dataset, cfg):  # noqa: F811
    """processes=2 gives the batches the caller's thread assembles, in the same order, with
    the same workers across an epoch boundary; a resume from the saved state continues the
    same; close() leaves no worker behind."""
    data = tfds_aishell1.open_prepared(prepared_dataset[0], "train", cfg)

    def make(processes):
        return pipeline.Batches(data, cfg, batch_size=2, train=True, seed=1, num_buckets=2,
                                workers=0, processes=processes)

    serial = make(0)
    want = [next(serial) for _ in range(10)]  # 4 batches an epoch: crosses two epochs
    parallel = make(2)
    got = [next(parallel)]
    workers = _grain_workers()
    assert len(workers) == 2
    got += [next(parallel) for _ in range(5)]
    assert _grain_workers() == workers  # started once, not per epoch
    state = json.loads(json.dumps(parallel.get_state()))
    assert state == {"epoch": 1, "step": 2, "seed": 1, "process_count": 1, "batch_size": 2}
    parallel.close()
    assert not _grain_workers() and not any(w.is_alive() for w in workers)
    resumed = make(2)
    resumed.set_state(state)
    got += [next(resumed) for _ in range(4)]
    assert resumed.get_state() == serial.get_state()
    _assert_same_batches(got, want)
    resumed.close()
    serial.close()
    assert not _grain_workers()


def test_worker_processes_read_each_hosts_share_and_end_evaluation(prepared_dataset, cfg):  # noqa: F811
    data = tfds_aishell1.open_prepared(prepared_dataset[0], "train", cfg)
    whole = pipeline.Batches(data, cfg, batch_size=4, train=True, seed=2, num_buckets=2, workers=0)
    hosts = [pipeline.Batches(data, cfg, batch_size=2, train=True, seed=2, num_buckets=2,
                              process_index=p, process_count=2, processes=2) for p in range(2)]
    for _ in range(3):  # 2 global batches an epoch: into the second epoch
        want, shares = next(whole), [next(host) for host in hosts]
        for key in want:  # the hosts' rows, in host order, are the global batch
            np.testing.assert_array_equal(np.concatenate([share[key] for share in shares]), want[key])
    for host in hosts:
        host.close()

    def evaluation(processes):  # 8 records, 3 a batch: the last batch has a padding row
        batches = pipeline.Batches(data, cfg, batch_size=3, train=False, workers=0,
                                   processes=processes)
        passed = list(batches)
        with pytest.raises(StopIteration):
            next(batches)
        batches.close()
        return passed

    serial = evaluation(0)
    assert len(serial) == 3 and not serial[-1]["example_mask"].all()
    _assert_same_batches(evaluation(2), serial)
    assert not _grain_workers()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ORPHAN_SCRIPT = """
import signal, sys
# Ctrl-C raises KeyboardInterrupt, as in a terminal: a suite started in the background (`&`)
# would otherwise hand its children SIGINT ignored, and this parent would never stop.
signal.signal(signal.SIGINT, signal.default_int_handler)
from w2v_jax.data import pipeline, tfds_aishell1
from w2v_jax.models.config import Wav2Vec2Config
cfg = Wav2Vec2Config()
batches = pipeline.Batches(tfds_aishell1.open_prepared(sys.argv[1], "train", cfg), cfg,
                           batch_size=2, train=True, num_buckets=2, processes=2)
next(batches)
import multiprocessing
print(*[c.pid for c in multiprocessing.active_children() if c.name.startswith("grain-")], flush=True)
import time
time.sleep(600)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_worker_processes_end_with_a_signalled_parent(prepared_dataset, signum):  # noqa: F811
    """A parent stopped by SIGTERM (no handler: gone at once) or Ctrl-C (KeyboardInterrupt)
    without closing its batches leaves no worker process behind."""
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, prepared_dataset[0]],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "PYTHONPATH": REPO})
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        parent.send_signal(signum)
        parent.wait(timeout=30)  # grain's exit hook alone may wait 25 s for each worker
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(pid) for pid in pids)
    finally:
        parent.kill()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
