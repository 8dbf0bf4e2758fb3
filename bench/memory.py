r"""Per-device memory of a wav2vec 2.0 step under each mesh, compiled and never run.

  python -m bench.memory --preset=large --devices=8        # the full grid (slow: see BUILD_NOTES)
  python -m bench.memory --meshes=data=8,fsdp=8 --dtypes=bfloat16 --remat=true --scan=true

XLA compiles the sharded step for `--devices` simulated CPU devices from abstract inputs
(jax.ShapeDtypeStruct with shardings: nothing is allocated) and reports one device's
memory (`compiled.memory_analysis()`). Per configuration it prints the parameter and
optimizer-state bytes a device holds (from the state's shardings), XLA's argument,
temporary and total bytes, the step's FLOPs per device (analytic, w2v_jax.flops; XLA's
cost analysis beside it counts a scanned layer stack once) and the compile time. The
last line is the FSDP ratio: fsdp=8 state bytes per device / data=8 state bytes per device.

A step kind is one entry of STEP_KINDS: a function from (model config, mesh, per-device
batch, samples) to the jitted step and its abstract arguments.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("preset", "large", "Model preset.")
flags.DEFINE_integer("devices", 8, "Simulated CPU devices (XLA's host platform device count).")
flags.DEFINE_list("meshes", ["data=8", "fsdp=8", "data=2xfsdp=4", "fsdp=4xtensor=2"],
                  "Meshes: axis=size terms joined by 'x'; unnamed axes are 1.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes (parameters stay float32).")
flags.DEFINE_list("remat", ["false", "true"], "Remat switch values.")
flags.DEFINE_list("scan", ["true", "false"], "scan_layers values.")
flags.DEFINE_list("steps", ["fine_tune", "pretrain"], "Step kinds.")
flags.DEFINE_integer("batch_per_device", 4, "Utterances per device.")
flags.DEFINE_float("seconds", 15.0, "Seconds of 16 kHz audio per utterance (all padded to it).")
flags.DEFINE_string("json", None, "Also write the rows to this JSON file.")
FLAGS = flags.FLAGS
GIB = 1024 ** 3
DEVICE_GIB = (16, 32, 80, 141)  # v5e / V100-32G / A100-H100 80G / H200


def parse_mesh(spec: str) -> dict[str, int]:
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    for term in spec.split("x"):
        axis, _, size = term.partition("=")
        if axis not in sizes or not size.isdigit():
            raise app.UsageError(f"--meshes: bad term {term!r} in {spec!r}; expected data=N, fsdp=N "
                                 "or tensor=N joined by 'x'")
        sizes[axis] = int(size)
    return sizes


def fine_tune_step(model_config, mesh, batch_per_device: int, samples: int):
    """The adapter to the trainer: phase 2 of fine-tuning (heads and transformer trained, CNN
    frozen as configured), the state donated. Returns (jitted step, abstract state, abstract batch)."""
    import jax
    import numpy as np

    from w2v_jax import sharding
    from w2v_jax.train import FineTuning, default_config
    from w2v_jax.train import step as S

    config = default_config()
    config.tasks = {"tone": 1.0}
    task = FineTuning(config, model_config)
    phases = S.Phases(task)
    graphdef, state = phases.abstract_state(1)
    shardings = sharding.state_shardings(state, mesh)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         state, shardings)
    global_batch = batch_per_device * mesh.size // mesh.shape["tensor"]
    frames = int(model_config.num_frames(samples))
    where = S.batch_shardings(mesh)
    batch = {"input_values": jax.ShapeDtypeStruct((1, global_batch, samples), np.float32, sharding=where),
             "attention_mask": jax.ShapeDtypeStruct((1, global_batch, samples), np.int32, sharding=where),
             "labels/tone": jax.ShapeDtypeStruct((1, global_batch, frames), np.int32, sharding=where)}
    step = S.jit_train_step(graphdef, task, 1, phases.optimizers[1], mesh, shardings)
    return step, state, batch


# The pre-training step joins here once the pre-training model exists (w2v_jax.pretrain).
STEP_KINDS = {"fine_tune": fine_tune_step}


def state_bytes_per_device(tree) -> tuple[int, int]:
    """(bytes of the parameters, bytes of the optimizer state) that one device holds."""
    import jax
    import numpy as np

    def per_device(leaf):
        shape = leaf.sharding.shard_shape(leaf.shape)
        return int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize if hasattr(leaf.dtype, "itemsize") else 0
    total = lambda t: sum(per_device(x) for x in jax.tree.leaves(t))
    return total(tree["params"]), total(tree["opt"])


def measure(kind: str, model_config, mesh_spec: str, batch_per_device: int, samples: int) -> dict:
    import jax

    from w2v_jax import flops, sharding

    sizes = parse_mesh(mesh_spec)
    mesh = sharding.make_mesh(**sizes)
    step, state, batch = STEP_KINDS[kind](model_config, mesh, batch_per_device, samples)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    params, opt = state_bytes_per_device(state)
    replicas = mesh.size // sizes["tensor"]  # devices that hold different utterances
    global_batch = batch_per_device * replicas
    step_flops = flops.fine_tune_step_flops(model_config, samples, global_batch, num_classes=5)
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
    return dict(step=kind, mesh=mesh_spec, dtype=model_config.dtype, remat=model_config.remat,
                scan=model_config.scan_layers, params_bytes=params, opt_bytes=opt,
                argument_bytes=memory.argument_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
                total_bytes=total, flops_per_device=step_flops / mesh.size,
                xla_flops_per_device=compiled.cost_analysis().get("flops", float("nan")),
                compile_s=compile_s)


def fits(total_bytes: int) -> str:
    return " ".join(f"{g}" for g in DEVICE_GIB if total_bytes <= g * GIB) or "-"


def main(argv):
    del argv
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={FLAGS.devices}").strip()
    import jax

    from w2v_jax.files import write_json
    from w2v_jax.models import Wav2Vec2Config

    truthy = {"true": True, "false": False}
    samples = int(FLAGS.seconds * 16000)
    print(f"{FLAGS.preset}, {FLAGS.batch_per_device} x {FLAGS.seconds:g} s per device, "
          f"{jax.device_count()} simulated {jax.devices()[0].platform} devices; GiB per device; "
          "fits: device sizes (GiB) the total fits", flush=True)
    print("| step | mesh | dtype | remat | scan | params | opt state | arguments | temporaries "
          "| total | fits | TFLOP/device (analytic, XLA) | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows, grid_start = [], time.perf_counter()
    for kind in FLAGS.steps:
        if kind not in STEP_KINDS:
            print(f"| {kind} | not measured: no {kind} step exists yet |", flush=True)
            continue
        for mesh_spec in FLAGS.meshes:
            for dtype in FLAGS.dtypes:
                for remat in FLAGS.remat:
                    for scan in FLAGS.scan:
                        config = Wav2Vec2Config.preset(FLAGS.preset, dtype=dtype,
                                                       remat=truthy[remat], scan_layers=truthy[scan])
                        row = measure(kind, config, mesh_spec, FLAGS.batch_per_device, samples)
                        rows.append(row)
                        g = lambda key: f"{row[key] / GIB:.2f}"
                        print(f"| {kind} | {mesh_spec} | {dtype} | {remat} | {scan} | {g('params_bytes')} "
                              f"| {g('opt_bytes')} | {g('argument_bytes')} | {g('temp_bytes')} "
                              f"| {g('total_bytes')} | {fits(row['total_bytes'])} "
                              f"| {row['flops_per_device'] / 1e12:.2f}, {row['xla_flops_per_device'] / 1e12:.2f} "
                              f"| {row['compile_s']:.0f} |", flush=True)
    print(f"grid compiled in {time.perf_counter() - grid_start:.0f} s")
    if FLAGS.json:
        write_json(FLAGS.json, rows)
    state = {r["mesh"]: r["params_bytes"] + r["opt_bytes"] for r in rows}
    if "fsdp=8" in state and "data=8" in state:
        print(f"fsdp=8 state bytes per device / data=8 state bytes per device: "
              f"{state['fsdp=8'] / state['data=8']:.4f}")


if __name__ == "__main__":
    app.run(main)
