"""The analysis report on a hand-made store whose layers carry a known, rising label signal."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from w2v_jax.analysis import store as store_lib
from w2v_jax.analysis.bootstrap import resample_counts
from w2v_jax.analysis.probes import speaker_split
from w2v_jax.analysis.report import label_rows, score_store, score_table, write_report
from w2v_jax.data import labels as L

NUM_LAYERS, DIM, SPEAKERS, PER_SPEAKER = 4, 8, 6, 60


def make_store(directory, seed=0):
    """Layer l = tone one-hot * 3l + unit noise: layer 0 knows nothing, higher layers more.
    Initials (tone -1) are rows too, so label_rows must drop them."""
    rng = np.random.default_rng(seed)
    n = SPEAKERS * PER_SPEAKER
    speaker = np.repeat([f"S{i:04d}" for i in range(SPEAKERS)], PER_SPEAKER)
    sex = np.repeat(np.arange(SPEAKERS) % 2, PER_SPEAKER)
    tone = rng.integers(0, 5, n)
    tone[::4] = -1  # initials carry no tone
    table = {"utterance": np.asarray([f"U{i // 10:04d}" for i in range(n)]), "speaker": speaker,
             "segment": np.arange(n) % 10, "frame": np.arange(n) % 50, "tone": tone,
             "final": np.where(tone >= 0, tone + 1, -1), "sex": sex}
    part = os.path.join(directory, "part-000")
    os.makedirs(part)
    signal = np.zeros((n, DIM))
    signal[tone >= 0, tone[tone >= 0]] = 1.0
    for layer in range(NUM_LAYERS):
        np.save(os.path.join(part, store_lib.layer_file(layer)),
                (3 * layer * signal + rng.normal(size=(n, DIM))).astype(np.float32))
    store_lib.write_table(os.path.join(directory, store_lib.SEGMENTS_FILE), table)
    with open(os.path.join(directory, store_lib.STORE_FILE), "w") as f:
        json.dump({"num_layers": NUM_LAYERS, "hidden_size": DIM, "dtype": "float32"}, f)
    return store_lib.Store(directory)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("store") / "rising"))


def test_label_rows_keep_labelled_segments_and_renumber_present_classes(store):
    rows, classes = label_rows(store, "final")
    assert (store.table["final"][rows] >= 0).all() and len(rows) == (store.table["final"] >= 0).sum()
    np.testing.assert_array_equal(classes, store.table["final"][rows] - 1)  # finals 1..5 -> 0..4


@pytest.mark.slow
def test_scores_follow_the_planted_signal(store):
    scores = score_store(store, label_sets=("tone", "sex"), metrics=("svcca", "cka"), bootstrap=0,
                         floors=False)
    tone = scores["tone"]
    assert tone["svcca"][0] < 0.3 and tone["svcca"][-1] > 0.95  # noise at layer 0, signal on top
    assert np.all(np.diff(tone["svcca"]) > 0) and np.all(np.diff(tone["cka"]) > 0)
    assert tone["probe_accuracy"][0] < 0.45 and tone["probe_accuracy"][-1] > 0.9  # chance is 0.2
    assert tone["samples"][0] == (store.table["tone"] >= 0).sum()
    # Sex is in no layer: one canonical correlation, the R of regressing sex on DIM noise
    # features; under the null N R^2 ~ chi2(DIM), so 4 standard deviations bound it.
    assert scores["sex"]["svcca"].max() < np.sqrt((DIM + 4 * np.sqrt(2 * DIM)) / len(store))


@pytest.mark.slow
def test_report_files(store, tmp_path):
    scores = {"rising": score_store(store, label_sets=("tone",))}
    path = write_report(scores, {"rising": store}, str(tmp_path), umap=False)
    text = open(path).read()
    assert "![SVCCA per layer](svcca_layers.png)" in text and "| rising | tone |" in text
    for name in ("svcca_layers.png", "svcca_layers.svg", "scores.csv", "scores.json",
                 "pca_rising_layer00_tone.png", "pca_rising_layer03_sex.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0] == "model,label_set,score,layer,value" and len(rows) > NUM_LAYERS


@pytest.mark.slow
def test_analyze_cli(store, tmp_path):
    tuned = make_store(str(tmp_path / "tuned"), seed=1)
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "launch.analyze", f"--embeddings={store.directory}",
                    f"--embeddings={tuned.directory}", "--names=pretrained,tone", f"--out={out}",
                    "--noumap", "--noprobes", "--label_sets=tone,sex", "--bootstrap=20"],
                   check=True, capture_output=True)
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["tone"]["tone"]) >= {"svcca", "samples", "classes", "svcca_low",
                                           "svcca_permuted"}
    claims = json.loads((out / "claims.json").read_text())
    assert [(c["model"], c["label"], c["kind"]) for c in claims] == [("tone", "tone", "rises"),
                                                                     ("tone", "sex", "falls")]
    assert all(c["verdict"] in ("holds", "fails", "undecided") and c["ci"] for c in claims)
    assert (out / "layer_similarity.png").stat().st_size > 0


def rewrite_layer(store, layer, change):
    path = os.path.join(store.directory, "part-000", store_lib.layer_file(layer))
    np.save(path, change(np.load(path)))


def test_layer_rows_must_match_the_segment_table(tmp_path):
    store = make_store(str(tmp_path / "extra"))
    n = len(store)
    rewrite_layer(store, 1, lambda x: np.concatenate([x, x[:50]]))
    with pytest.raises(ValueError, match=rf"extra/part-000/layer_01.npy has {n + 50} rows, "
                                         rf"but segments.csv has {n} segments"):
        score_store(store, label_sets=("tone",), probes=False, bootstrap=0, floors=False)
    rewrite_layer(store, 1, lambda x: x[:100])
    with pytest.raises(ValueError, match=rf"layer_01.npy has 100 rows, but segments.csv has {n}"):
        store.layer(1, np.arange(n))


def test_store_count_must_match_the_segment_table(tmp_path):
    store = make_store(str(tmp_path / "counted"))
    path = os.path.join(store.directory, store_lib.STORE_FILE)
    with open(path, "w") as f:
        json.dump({**store.info, "count": len(store) + 1}, f)
    with pytest.raises(ValueError, match=rf"counted: store.json says {len(store) + 1} segments "
                                         rf"but segments.csv has {len(store)} rows"):
        store_lib.Store(store.directory)


def test_nan_error_names_store_layer_and_label_set(tmp_path):
    store = make_store(str(tmp_path / "broken"))
    rewrite_layer(store, 2, lambda x: np.where(np.arange(len(x))[:, None] == 7, np.nan, x))
    with pytest.raises(ValueError, match=r"broken: label set 'sex', layer_02.npy: x contains NaN"):
        score_store(store, label_sets=("sex",), probes=False, bootstrap=0, floors=False)


@pytest.mark.slow
def test_label_sets_that_cannot_be_scored_are_skipped(tmp_path, caplog):
    store = make_store(str(tmp_path / "one-sex"))
    store.table["sex"][:] = 0
    scores = score_store(store, label_sets=("tone", "sex"), probes=False, floors=False)
    assert scores["sex"] == {"skipped": "1 class(es) in the split"} and "svcca" in scores["tone"]
    assert "one-sex: sex not scored: 1 class(es)" in caplog.text
    text = open(write_report({"one-sex": scores}, {}, str(tmp_path / "report"),
                             projection_layers=())).read()
    assert "| one-sex | sex | not scored | 1 class(es) in the split |" in text
    # 12 segments of 5 tones cannot fill 8 dimensions: when nothing is left, say why for each
    with pytest.raises(ValueError, match=r"one-sex: no label set could be scored: tone: 12 "
                                         r"segments, too few for 8 dimensions and \d classes; "
                                         r"sex: 1 class\(es\)"):
        score_store(store, label_sets=("tone", "sex"), max_samples=12)


def test_probe_skipped_with_a_warning_when_training_speakers_lack_a_class(tmp_path, caplog):
    store = make_store(str(tmp_path / "rare"))
    rows, _ = label_rows(store, "final")
    _, test = speaker_split(store.table["speaker"][rows], test_fraction=0.25, seed=0)
    store.table["final"][rows[test][0]] = 6  # a final only a held-out speaker says
    scores = score_store(store, label_sets=("final",), bootstrap=0, floors=False)
    assert "probe_accuracy" not in scores["final"] and "svcca" in scores["final"]
    why = f"classes ['{L.INVENTORIES['final'][6]}'] occur only in held-out speakers"
    assert scores["final"]["probe_reason"] == why and f"final: no probe: {why}" in caplog.text


@pytest.mark.slow
def test_bootstrap_interval_leaves_out_single_sex_resamples(store, caplog):
    """Sex is speaker % 2 over 6 speakers: a resample draws one sex only with p = 1/32."""
    counts = np.asarray(resample_counts(jax.random.key(0), SPEAKERS, 40))  # speakers sorted
    single_sex = np.sum((counts[:, 0::2].sum(1) == 0) | (counts[:, 1::2].sum(1) == 0))
    assert single_sex > 0
    sex = score_store(store, label_sets=("sex",), probes=False, bootstrap=40, seed=0)["sex"]
    np.testing.assert_array_equal(sex["svcca_degenerate"], np.full(NUM_LAYERS, single_sex))
    assert np.isfinite(sex["svcca_low"]).all() and np.all(sex["svcca_low"] <= sex["svcca_high"])
    assert "resamples of 6 speakers are degenerate" in caplog.text


def test_report_of_a_metric_other_than_svcca(store, tmp_path):
    scores = {"rising": score_store(store, label_sets=("tone",), metrics=("cka",), probes=False,
                                    bootstrap=0, floors=False)}
    text = open(write_report(scores, {"rising": store}, str(tmp_path), projection_layers=())).read()
    assert "![linear CKA per layer](cka_layers.png)" in text and "SVCCA" not in text
    with pytest.raises(ValueError, match=r"no svcca scores to tabulate for \['rising'\]"):
        score_table(scores)


def test_rows_of_a_store_in_parts_are_the_rows_of_the_whole(store, tmp_path):
    """A multi-host store holds one part per process; rows are gathered part by part."""
    split = tmp_path / "parts"
    shutil.copytree(store.directory, split)
    whole = np.load(split / "part-000" / store_lib.layer_file(1))
    bounds = [0, 7, 7, len(whole) // 2, len(whole)]  # an empty part too
    shutil.rmtree(split / "part-000")
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        os.makedirs(split / f"part-{i:03d}")
        np.save(split / f"part-{i:03d}" / store_lib.layer_file(1), whole[lo:hi])
    parts = store_lib.Store(str(split))
    rng = np.random.default_rng(0)
    edges = np.array([0, 6, 7, len(whole) // 2 - 1, len(whole) // 2, len(whole) - 1])
    for rows in (None, rng.permutation(len(whole))[:50], edges[::-1], np.array([3, 3, -1, 8]),
                 rng.random(len(whole)) < 0.3):
        np.testing.assert_array_equal(parts.layer(1, rows), store.layer(1, rows))


def markdown_tables(text):
    """Every table of a Markdown text as (header, rows) lists of cells."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            cells = [[c.strip() for c in ln.strip()[1:-1].split(" | ")] for ln in lines[i:end]]
            tables.append((cells[0], cells[2:]))
    return tables


@pytest.mark.slow
def test_report_verdicts_first_with_well_formed_tables(tmp_path):
    """Two stores of the same segments (one with 3 layers, a short model), bootstrap,
    floors, log-mel features, the layer-to-layer curve and the claims."""
    from w2v_jax.analysis.claims import check_claims
    from w2v_jax.analysis.report import layer_similarity

    base = make_store(str(tmp_path / "pretrained"), seed=0)
    tuned = make_store(str(tmp_path / "tone"), seed=1)
    rng = np.random.default_rng(2)
    mel = rng.standard_normal((len(base), 12)).astype(np.float32)
    scores = {name: score_store(s, label_sets=("tone", "sex"), bootstrap=30, log_mel=mel)
              for name, s in (("pretrained", base), ("tone", tuned))}
    tone = scores["tone"]["tone"]
    assert tone["svcca_samples"].shape == (30, NUM_LAYERS) and len(tone["speakers"]) == SPEAKERS
    # chance floors sit well below the planted top-layer signal, and log-mel (noise) is at chance
    assert tone["svcca_permuted"].max() < 0.3 and tone["svcca_random"].max() < 0.3
    assert tone["svcca_logmel"] < 0.3 and tone["probe_random"].max() < 0.45
    similarity = {"tone": layer_similarity(base, tuned)}
    # same planted signal, independent noise: layer 0 (noise only) differs most
    assert similarity["tone"][0] < similarity["tone"][-1]
    claims = check_claims(scores, {}, top_fraction=0.5, keep_fraction=0.9,
                          same_accuracy_margin=0.02, num_samples=30)
    path = write_report(scores, {"pretrained": base}, str(tmp_path / "report"), claims=claims,
                        similarity=similarity, projection_layers=(), umap=False)
    text = open(path).read()
    assert text.index("verdicts") < text.index("SVCCA against the labels")
    tables = markdown_tables(text)
    assert tables[0][0] == ["verdict", "claim", "estimate [95% CI]", "speakers", "figures"]
    assert len(tables[0][1]) == len(claims)
    for header, rows in tables:
        assert all(len(row) == len(header) for row in rows), header
    for name in ("svcca_layers.png", "probe_layers.png", "layer_similarity.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    # the floor in numbers: the highest chance score over both models' permuted and random draws
    tone_floor = max(max(scores[m]["tone"]["svcca_permuted"].max(),
                         np.max(scores[m]["tone"]["svcca_random"])) for m in scores)
    assert f"tone {tone_floor:.2f}" in text.split("Chance floor", 1)[1].split("\n", 1)[0]


def test_markdown_table_rejects_ragged_rows():
    from w2v_jax.analysis.report import markdown_table

    with pytest.raises(ValueError, match="3 cells for 5 columns"):
        markdown_table(list("abcde"), [[1, 2, 3]])
    assert "a \\| b" in markdown_table(["x"], [["a | b"]])
