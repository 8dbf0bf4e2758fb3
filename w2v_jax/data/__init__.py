"""Data layer: labels, alignments, the AISHELL-1 reader, the TFDS dataset, the input pipeline.

Training from a prepared dataset:
    data = open_prepared(data_dir, "train", cfg)          # TFDS array_record, checked
    batches = Batches(data, cfg, batch_size=8, train=True, seed=0,
                      process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(batches); state = batches.get_state()  # JSON-able; set_state(state) resumes
Straight from a small corpus (synthetic demo, tests):
    data = corpus_split(corpus_dir, "train", cfg)
Extraction: Batches(..., train=False) gives one pass with `example_mask`, central
frames in `segments/frame` and their labels in `segments/<task>`; segment_rows(batch)
flattens them to segment-table rows.
Preparing: tfds_aishell1.prepare(corpus_dir, data_dir, alignments_dir=...) or
`python -m launch.prepare_data`. Synthetic corpus: synthetic.make_corpus(out_dir) (a formant
toy, for unit tests); eSpeak NG corpus: espeak.make_corpus(out_dir, speakers=, utterances=,
seed=) or `python -m launch.make_corpus` (many voices, exact alignments).

tfds_aishell1 (and so TFDS) is imported lazily: `open_prepared` and `prepare` are
reached through this module's __getattr__.
"""

from w2v_jax.data.aishell import Corpus, Summary, Utterance, iter_examples, load_example, load_split
from w2v_jax.data.alignments import (Interval, PhoneSegment, central_frames, frame_labels,
                                     phone_segments, read_ctm, read_textgrid, segment_columns,
                                     write_textgrid)
from w2v_jax.data.audio import SAMPLE_RATE, read_wav
from w2v_jax.data.errors import DataError
from w2v_jax.data.labels import (FINALS, IGNORE, INITIALS, INVENTORIES, PHONES, SEXES, TASKS,
                                 TONES, TRAINING_TASKS, Phone, Syllable, check_inventories,
                                 inventories, label_index, num_classes, parse_phone,
                                 parse_syllable)
from w2v_jax.data.pipeline import Batches, bucket_lengths, segment_rows
from w2v_jax.data.sources import (DatasetSplit, check_frame_geometry, corpus_split,
                                  frame_geometry, from_examples, segment_table)


def __getattr__(name):
    if name in ("open_prepared", "prepare", "load_metadata", "Aishell1"):
        from w2v_jax.data import tfds_aishell1
        return getattr(tfds_aishell1, name)
    raise AttributeError(f"module 'w2v_jax.data' has no attribute {name!r}")
