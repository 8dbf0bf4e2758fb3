"""bench.memory on the tiny preset: FSDP divides the train state, and a compiled step reports
one device's memory without allocating anything."""

import jax
import numpy as np
import pytest

from bench.memory import fine_tune_step, measure, parse_mesh, state_bytes_per_device
from w2v_jax import sharding
from w2v_jax.models import Wav2Vec2Config

TINY = Wav2Vec2Config.preset("tiny")


def state_bytes(mesh_spec):
    _, state, _ = fine_tune_step(TINY, sharding.make_mesh(**parse_mesh(mesh_spec)), 1, 16000)
    return state_bytes_per_device(state)


def test_fsdp_divides_parameters_and_optimizer_state():
    replicated, sharded = state_bytes("data=8"), state_bytes("fsdp=8")
    leaves = jax.tree.leaves(fine_tune_step(TINY, sharding.make_mesh(data=8), 1, 16000)[1]["params"])
    assert replicated[0] == sum(np.prod(x.shape) * x.dtype.itemsize for x in leaves)
    assert sum(sharded) / sum(replicated) <= 0.14


@pytest.mark.slow  # one 8-device compile: about 20 s on a quiet 2-core machine
def test_compiled_step_reports_one_devices_memory():
    row = measure("fine_tune", TINY, "fsdp=8", 1, 16000)
    params, opt = state_bytes("fsdp=8")
    assert (row["params_bytes"], row["opt_bytes"]) == (params, opt)
    assert row["argument_bytes"] >= params + opt  # the state and this device's batch
    assert row["total_bytes"] >= row["argument_bytes"] and row["temp_bytes"] > 0
