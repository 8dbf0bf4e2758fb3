"""The embedding store: per layer an (N, D) .npy (memory-mapped), plus a segment table.

    OUT/store.json         what was extracted (model, split, layers, dtype, fingerprint)
    OUT/segments.csv       one row per segment: utterance, speaker, sex, tone, final, ...
    OUT/part-PPP/layer_LL.npy   rows of process PPP, layer LL (0 = encoder input, as
                                hidden_states[0]); cnn.npy = extract_features
    OUT/part-PPP/segments.csv

Why .npy: the analysis wants whole (N, D) matrices per layer; np.load(mmap_mode="r")
gives them without a reader library or a copy (on an object store each part is read whole
instead), and one file per layer lets a user load only the layers they want. bfloat16 is
stored as its uint16 bit pattern (`dtype` in store.json says how to view it), since .npy
has no bfloat16.

A store is complete when store.json exists: on a local disk extraction writes into
OUT.partial and renames it to OUT once every process is done; on an object store (gs://)
it uploads the parts into OUT and writes store.json last.
"""

from __future__ import annotations

import csv
import io

import ml_dtypes
import numpy as np

from w2v_jax import files
from w2v_jax.data.labels import TASKS

STORE_FILE = "store.json"
SEGMENTS_FILE = "segments.csv"
CNN = "cnn"
INT_COLUMNS = frozenset({"example", "segment", "frame", *TASKS})
FLOAT_COLUMNS = frozenset({"start", "end", "time"})


def layer_file(layer: int | str) -> str:
    return f"{layer if isinstance(layer, str) else f'layer_{layer:02d}'}.npy"


def storage_dtype(dtype: str) -> np.dtype:
    return np.dtype(np.uint16 if dtype == "bfloat16" else dtype)


def write_table(path: files.PathLike, table: dict[str, np.ndarray]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(list(table))
    writer.writerows(zip(*(np.asarray(v).tolist() for v in table.values())))
    files.write_text(path, text.getvalue())


def read_table(path: files.PathLike) -> dict[str, np.ndarray]:
    """The CSV back with its types: label indices and frames int, times float, the rest text."""
    rows = list(csv.reader(io.StringIO(files.path(path).read_bytes().decode(), newline="")))
    header, body = rows[0], rows[1:]
    table = {}
    for i, name in enumerate(header):
        column = [r[i] for r in body]
        kind = int if name in INT_COLUMNS else float if name in FLOAT_COLUMNS else str
        table[name] = np.asarray([kind(v) for v in column], dtype=kind if kind is not str else None)
    return table


class Store:
    """A finished store. `layer(i)` is (N, D) float32; `table` holds the segment columns."""

    def __init__(self, directory: files.PathLike):
        path = files.path(directory) / STORE_FILE
        if not path.exists():
            partial = files.path(f"{directory}.partial")
            raise FileNotFoundError(f"{directory}: no {STORE_FILE}; " + (
                f"an unfinished extraction is in {partial} (rerun extract to resume)"
                if partial.exists() else
                "an unfinished upload of an extraction (rerun extract to finish it)"
                if files.path(directory).exists() and not files.is_local(directory) else
                "not an embedding store"))
        self.info = files.read_json(path)
        self.directory = files.path(directory)
        self.parts = sorted(p for p in files.path(directory).iterdir() if p.name.startswith("part-"))
        self.table = read_table(files.path(directory) / SEGMENTS_FILE)
        self.num_layers = int(self.info["num_layers"])  # hidden states: num_hidden_layers + 1
        if "count" in self.info and self.info["count"] != len(self):
            raise ValueError(f"{directory}: {STORE_FILE} says {self.info['count']} segments but "
                             f"{SEGMENTS_FILE} has {len(self)} rows")

    def __len__(self) -> int:
        return len(self.table["utterance"])

    def layer(self, layer: int | str, rows: np.ndarray | None = None) -> np.ndarray:
        """One layer's embeddings as float32, (N, D), optionally only `rows`."""
        paths = [p / layer_file(layer) for p in self.parts]
        parts = [files.load_npy(path) for path in paths]
        # Row i must be segment i: extra or missing rows would silently pair embeddings
        # with the wrong labels (or fail later with a bare IndexError).
        if sum(len(part) for part in parts) != len(self):
            held = ", ".join(f"{path} has {len(part)}" for path, part in zip(paths, parts))
            raise ValueError(f"{self.directory}: {layer_file(layer)} and {SEGMENTS_FILE} disagree: "
                             f"{held} rows, but {SEGMENTS_FILE} has {len(self)} segments")
        if len(parts) == 1:
            data = parts[0] if rows is None else parts[0][rows]
        elif rows is None:
            data = np.concatenate(parts)
        else:  # gather from each memory-mapped part: concatenating first reads every part whole
            rows = np.arange(len(self))[rows]  # masks, negative indices and bounds as numpy has them
            starts = np.cumsum([0] + [len(part) for part in parts[:-1]])
            owner = np.searchsorted(starts, rows, side="right") - 1
            data = np.empty((len(rows), parts[0].shape[1]), parts[0].dtype)
            for i, (part, start) in enumerate(zip(parts, starts)):
                data[owner == i] = part[rows[owner == i] - start]
        if self.info["dtype"] == "bfloat16":
            return np.asarray(data).view(ml_dtypes.bfloat16).astype(np.float32)
        return np.asarray(data, np.float32)

    def layers(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Every hidden state, (num_layers, N, D) float32."""
        return np.stack([self.layer(i, rows) for i in range(self.num_layers)])
