"""Jitted extraction of every hidden state at the central frame of every segment.

One pass over a split in the bucketed pipeline's evaluation order; the forward and
the gather of central frames run on the devices (batch sharded over the mesh); each
process writes its own rows into memory-mapped .npy files (see store.py). Progress is
recorded every few batches, so an interrupted run resumes where it stopped. Memory maps need
a local disk: a store on an object store (gs://) is written in a local scratch directory
(under the system's temporary directory, named after OUT, so a rerun on the same machine
resumes) and uploaded when done.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from w2v_jax import files, sharding
from w2v_jax.analysis import store as store_lib
from w2v_jax.data import labels as L
from w2v_jax.data.pipeline import Batches, segment_rows
from w2v_jax.data.sources import DatasetSplit
from w2v_jax.models import Wav2Vec2Model

PROGRESS_FILE = "progress.json"
_DTYPES = ("float32", "bfloat16")
_LAYERS_SPEC = P(None, sharding.BATCH_AXES)  # (layers, batch, segments, dim)


def _digest(*chunks: bytes) -> str:
    """sha256 of the chunks, each prefixed by its length so that no two splits of the bytes agree."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(len(chunk).to_bytes(8, "little") + chunk)
    return digest.hexdigest()


def _weights_digest(model: Wav2Vec2Model) -> str:
    """sha256 of every parameter's path, dtype, shape and bytes (in the state's sorted key
    order): any changed weight, not only a changed norm, gives another digest."""
    digest = hashlib.sha256()
    for path, value in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]:
        array = np.ascontiguousarray(jax.device_get(value))
        digest.update(f"{jax.tree_util.keystr(path)} {array.dtype} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _fingerprint(model: Wav2Vec2Model, data: DatasetSplit, dtype: str) -> dict[str, str]:
    """What a store holds, by part, so that a mismatch can say which part differs: the model
    (config, compute dtype included, and every weight), the split (its name, each utterance's
    length and segment count, the label inventories) and the stored dtype."""
    config = json.dumps(model.config.to_dict(), sort_keys=True).encode()
    labels = json.dumps(L.inventories(), sort_keys=True).encode()
    return {"model": _digest(config, _weights_digest(model).encode()),
            "split": _digest(data.split.encode(), data.lengths.astype(np.int64).tobytes(),
                            data.num_segments.astype(np.int64).tobytes(), labels),
            "dtype": dtype}


def _layout(batches: Batches, plan: Sequence[np.ndarray]) -> dict:
    """How this process's rows are laid out: progress counts batches of exactly this plan."""
    return {"processes": batches.process_count, "batch_size": batches.batch_size,
            "digest": _digest(*(np.asarray(b, np.int64).tobytes() for b in plan))}


def _mismatch(expected: dict, found) -> str | None:
    """None if `found` (a stored fingerprint) is `expected`; else how it differs, for an error."""
    if not isinstance(found, dict):
        return "under an older fingerprint (no weight hash)"
    differing = [k for k in expected if found.get(k) != expected[k]]
    return f"of another {' and '.join(differing)}" if differing else None


@functools.lru_cache(maxsize=8)
def _gather_fn(graphdef, dtype: str, mesh):
    """Jitted forward + central-frame gather; cached so several stores of one architecture
    (the experiment's models) compile once per shape."""
    out_dtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    batch = sharding.batch_sharding(mesh)

    def gather(params, rest, audio, mask, frames):
        out = nnx.merge(graphdef, params, rest)(audio, mask)
        index = jnp.clip(frames, 0)[:, :, None]  # -1 padding gathers frame 0; dropped on the host
        pick = lambda h: jnp.take_along_axis(h, index, axis=1).astype(out_dtype)
        return jnp.stack([pick(h) for h in out.hidden_states]), pick(out.extract_features)

    return jax.jit(gather, out_shardings=(NamedSharding(mesh, _LAYERS_SPEC), batch))


def _local(array: jax.Array, mesh, spec) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.global_array_to_host_local_array(array, mesh, spec))


def extract(model: Wav2Vec2Model, data: DatasetSplit, out: files.PathLike, *, batch_size: int = 8,
            dtype: str = "float32", mesh=None, description: str = "",
            checkpoint_every: int = 20) -> store_lib.Store:
    """Write (or resume, or reuse) the embedding store of `data` under `out`.

    A finished store of the same model, split and dtype is returned as is, whatever the
    batch size and process count that wrote it; one of anything else is an error (remove
    it or choose another `out`). An unfinished one resumes under the same plan of batches.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: must be one of {_DTYPES}")
    out = files.absolute(out)
    fingerprint = _fingerprint(model, data, dtype)
    # On an object store an OUT without store.json is an unfinished upload: finished below.
    if (out / store_lib.STORE_FILE).exists() or (files.is_local(out) and out.exists()):
        existing = store_lib.Store(out)
        mismatch = _mismatch(fingerprint, existing.info.get("fingerprint"))
        if mismatch:
            raise FileExistsError(f"{out} holds embeddings {mismatch} "
                                  f"({existing.info.get('description')}); remove it or choose another --out")
        logging.info("%s is complete; nothing to extract", out)
        return existing

    mesh = mesh or sharding.make_mesh()
    pid = jax.process_index()
    batches = Batches(data, model.config, batch_size=batch_size, train=False,
                      process_index=pid, process_count=jax.process_count())
    if batches.global_batch % mesh.size:
        raise ValueError(f"global batch {batches.global_batch} must be a multiple of the "
                         f"{mesh.size} devices")
    plan = batches.local_plan()
    layout = _layout(batches, plan)
    staging = out.parent / f"{out.name}.partial" if files.is_local(out) else _local_staging(out)
    part = staging / f"part-{pid:03d}"
    part.mkdir(parents=True, exist_ok=True)
    progress_path = part / PROGRESS_FILE
    progress = {"fingerprint": fingerprint, "plan": layout, "batches": 0}
    if progress_path.exists():
        previous = files.read_json(progress_path)
        mismatch = _mismatch(fingerprint, previous.get("fingerprint"))
        if mismatch:
            raise FileExistsError(f"{staging} is an unfinished extraction {mismatch}; "
                                  "remove it to start afresh")
        if previous.get("plan") != layout:
            was = previous.get("plan") or {}
            now = (layout["processes"], layout["batch_size"])
            if (was.get("processes"), was.get("batch_size")) == now:
                why = "with another order of batches (did the bucketing change?)"
            else:
                why = (f"with {was.get('processes')} process(es) of batch size "
                       f"{was.get('batch_size')}, not {now[0]} of {now[1]}")
            raise FileExistsError(f"{staging} was started {why}; its rows follow that plan of "
                                  f"batches: rerun with it or remove {staging}")
        progress = previous
        logging.info("resuming %s after %d of %d batches", out, progress["batches"], len(plan))
    else:  # recorded now, so a rerun under another plan is refused even before the first save
        files.write_json(progress_path, progress)

    num_rows = int(sum(data.num_segments[b[b >= 0]].sum() for b in plan))
    cfg = model.config
    num_layers = cfg.num_hidden_layers + 1
    storage = store_lib.storage_dtype(dtype)
    mode = "r+" if progress["batches"] else "w+"
    arrays = {layer: np.lib.format.open_memmap(part / store_lib.layer_file(layer), mode, storage,
                                               (num_rows, cfg.hidden_size))
              for layer in range(num_layers)}
    arrays[store_lib.CNN] = np.lib.format.open_memmap(
        part / store_lib.layer_file(store_lib.CNN), mode, storage, (num_rows, cfg.conv_dim[-1]))

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.device_put(params, sharding.state_shardings(params, mesh))
    batch_sharding = sharding.batch_sharding(mesh)
    gather = _gather_fn(graphdef, dtype, mesh)
    to_global = lambda x: jax.make_array_from_process_local_data(batch_sharding, x)

    tables, row = [], 0
    for step, batch in enumerate(tqdm(batches, total=len(plan), desc=f"extract {data.split}",
                                      disable=pid != 0)):
        rows = segment_rows(batch)
        tables.append(rows)
        n = len(rows["frame"])
        if step >= progress["batches"]:
            hidden, cnn = gather(params, rest, to_global(batch["input_values"]),
                                 to_global(batch["attention_mask"]),
                                 to_global(batch["segments/frame"]))
            hidden, cnn = _local(hidden, mesh, _LAYERS_SPEC), _local(cnn, mesh, P(sharding.BATCH_AXES))
            # The same row-major order as segment_rows, which np.nonzero of this mask gives.
            cols = np.nonzero((batch["segments/frame"] >= 0) & batch["example_mask"][:, None])
            for layer in range(num_layers):
                arrays[layer][row: row + n] = hidden[layer][cols].view(storage)
            arrays[store_lib.CNN][row: row + n] = cnn[cols].view(storage)
            if (step + 1) % checkpoint_every == 0:
                for array in arrays.values():
                    array.flush()
                files.write_json(progress_path, {**progress, "batches": step + 1})
        row += n
    batches.close()
    for array in arrays.values():
        array.flush()
    del arrays
    table = _segment_table(tables, cfg)
    store_lib.write_table(part / store_lib.SEGMENTS_FILE, table)
    files.write_json(progress_path, {**progress, "batches": len(plan), "done": True})
    if not files.is_local(out):
        (out / part.name).mkdir(parents=True, exist_ok=True)
        for local in part.iterdir():
            files.copy_file(local, out / part.name / local.name)

    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"extract {out}")
    if pid == 0:
        _finish(staging if files.is_local(out) else out, out, {
            "fingerprint": fingerprint, "description": description, "split": data.split,
            "num_layers": num_layers, "hidden_size": cfg.hidden_size, "cnn_dim": cfg.conv_dim[-1],
            "dtype": dtype, "config": cfg.to_dict(), "inventories": L.inventories(),
            "processes": jax.process_count()})
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"extract {out} finished")
    if not files.is_local(out):
        files.remove_tree(part)
    return store_lib.Store(out)


def _local_staging(out: epath.Path) -> epath.Path:
    """Where a store bound for an object store is assembled: a local directory named after `out`,
    so that a rerun on this machine resumes."""
    name = hashlib.sha256(os.fspath(out).encode()).hexdigest()[:16]
    return files.path(tempfile.gettempdir()) / "w2v-jax-extract" / f"{out.name}-{name}.partial"


def _segment_table(tables: Sequence[dict], cfg) -> dict[str, np.ndarray]:
    merged = {k: np.concatenate([t[k] for t in tables]) for k in tables[0] if k != "batch_row"}
    merged["time"] = np.round(cfg.frame_center_seconds(merged["frame"]), 5)
    for column in ("start", "end"):  # float32 in the dataset: drop the noise digits
        merged[column] = np.round(merged[column].astype(np.float64), 5)
    for task in L.TASKS:
        if task in merged:
            names = np.asarray(("",) + L.INVENTORIES[task])  # index -1 (no label) -> ""
            merged[f"{task}_label"] = names[merged[task] + 1]
    return merged


def _finish(parts_dir: epath.Path, out: epath.Path, info: dict) -> None:
    """Merge the parts' segment tables and write store.json last: in `parts_dir`, renamed to
    `out` (a local disk), or in `out` itself (an object store, where the parts were uploaded)."""
    parts = sorted(p for p in parts_dir.iterdir() if p.name.startswith("part-"))
    tables = [store_lib.read_table(p / store_lib.SEGMENTS_FILE) for p in parts]
    table = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    store_lib.write_table(parts_dir / store_lib.SEGMENTS_FILE, table)
    files.write_json(parts_dir / store_lib.STORE_FILE, {**info, "count": len(table["frame"])})
    if parts_dir != out:
        os.replace(parts_dir, out)
    logging.info("wrote %d segments x %d layers to %s", len(table["frame"]), info["num_layers"], out)
