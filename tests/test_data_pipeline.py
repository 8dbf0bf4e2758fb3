"""The input pipeline: shapes, determinism, resumption, sharding, evaluation padding."""

import json

import numpy as np
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
