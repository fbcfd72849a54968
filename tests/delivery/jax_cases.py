"""JAX delivery: a tiny plain-JAX model trained on CPU, exactly-once epochs, resume,
zero-copy, and placement on one device, two devices and two processes.

Run by ``tests/delivery/test_jax.py`` in an interpreter of its own: JAX starts
threads when it initializes, and the main test process forks DataLoader workers.

Values are compared with xarray's read of the same store; placement with JAX's own
view of each array (``sharding``, ``addressable_shards``, ``unsafe_buffer_pointer``).
The two-device test runs in a fresh interpreter with ``XLA_FLAGS`` asking for two CPU
devices; the two-process test starts two interpreters joined by
``jax.distributed.initialize`` (gloo collectives on loopback).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding  # noqa: E402

import earthstream as es  # noqa: E402
from earthstream.delivery import JaxBatch, JaxStream  # noqa: E402
from earthstream.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _stream(path: Path, **kwargs: Any) -> es.Stream:
    kwargs.setdefault("variables", ["t2m", "u10", "v10"])
    kwargs.setdefault("batch_size", 8)
    kwargs.setdefault("seed", 4)
    return es.Stream(path, {"lat": 8, "lon": 8}, **kwargs)


def _model() -> tuple[Any, Callable[..., Any]]:
    """A per-pixel linear model t2m ~ a * u10 + b * v10 + c, trained by plain SGD."""
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}

    def loss(p: Any, u: Any, v: Any, t: Any, padded: Any) -> Any:
        pred = p["w"][0] * u / 10.0 + p["w"][1] * v / 10.0 + p["b"]
        err = ((pred - (t - 280.0) / 10.0) ** 2).mean(axis=(1, 2))
        keep = ~padded
        return jnp.where(keep, err, 0.0).sum() / jnp.maximum(keep.sum(), 1)

    @jax.jit
    def step(p: Any, u: Any, v: Any, t: Any, padded: Any) -> tuple[Any, Any]:
        value, grads = jax.value_and_grad(loss)(p, u, v, t, padded)
        return jax.tree_util.tree_map(lambda a, g: a - 0.05 * g, p, grads), value

    return params, step


def test_import_does_not_import_jax() -> None:
    code = (
        "import sys, numpy as np, earthstream as es\n"
        "src = es.ArraySource({'x': (('t', 'y'), np.zeros((4, 8), 'f4'))}, chunks={'t': 2})\n"
        "stream = es.Stream(src, {'y': 8}, batch_size=2)\n"
        "assert 'jax' not in sys.modules, 'import earthstream imported jax'\n"
        "stream.to_jax()\n"
        "assert 'jax' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_training_covers_every_epoch_once(era5_v3: Path, open_xr: Any) -> None:
    stream = _stream(era5_v3)
    batches = stream.to_jax(jax.devices("cpu")[0])
    assert isinstance(batches, JaxStream) and len(batches) == len(stream)
    params, step = _model()
    reference = open_xr(era5_v3)
    orders, losses = [], []
    for epoch in range(2):
        batches.set_epoch(epoch)
        seen = []
        for batch in batches:
            assert isinstance(batch, JaxBatch)
            assert batch.epoch == epoch
            for name in ("t2m", "u10", "v10"):
                assert isinstance(batch[name], jax.Array)
                assert batch[name].sharding == SingleDeviceSharding(jax.devices("cpu")[0])
            params, value = step(params, batch["u10"], batch["v10"], batch["t2m"], batch.padded)
            losses.append(float(value))
            seen += batch.window_ids.tolist()
            # the values on the device are xarray's values at each window
            k = int(batch.size) - 1
            t, y, x = (int(batch.starts[d][k]) for d in ("time", "lat", "lon"))
            np.testing.assert_array_equal(
                np.asarray(batch["t2m"][k]),
                reference["t2m"].values[t, y : y + 8, x : x + 8],
            )
        assert sorted(seen) == list(range(stream.n_windows))  # exactly once per epoch
        orders.append(seen)
    assert orders[0] != orders[1]  # set_epoch gave a new order
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert batches.report is not None and batches.report.finished


def test_resume_mid_epoch_continues_exactly_where_the_loop_stopped(era5_v3: Path) -> None:
    full = _stream(era5_v3).to_jax()
    full.set_epoch(1)
    expected = [b.window_ids.tolist() for b in full]

    first = _stream(era5_v3).to_jax(prefetch=3)
    first.set_epoch(1)
    taken = []
    for batch in first:
        taken.append(batch.window_ids.tolist())
        if len(taken) == 4:
            break
    state = first.state_dict()
    # the stream itself has run ahead (3 batches transferred ahead), the state has not
    assert first.stream.state_dict()["position"] > 4
    assert state["epoch"] == 1 and state["position"] == 4
    json.dumps(state)  # JSON-able, for a checkpoint

    resumed = _stream(era5_v3).to_jax()
    resumed.load_state_dict(state)
    rest = [b.window_ids.tolist() for b in resumed]
    assert taken + rest == expected
    # the epoch over, the state is the stream's: all of epoch 1 consumed
    assert resumed.state_dict() == resumed.stream.state_dict()
    end = resumed.state_dict()
    assert (end["epoch"], end["position"]) == (1, len(resumed))
    flat = [i for ids in taken + rest for i in ids]
    assert sorted(flat) == list(range(resumed.stream.n_windows))


def test_stacked_batches_reach_the_cpu_device_without_a_copy(era5_v3: Path) -> None:
    stream = es.Stream(
        era5_v3, {"lat": 8, "lon": 8, "level": None}, variables=["t2m", "z"], stack=True
    )
    batches = stream.to_jax()
    batch = next(iter(batches))
    host = batch.host.stacked
    assert host is not None and batch.stacked is not None
    assert batch.stacked.unsafe_buffer_pointer() == host.ctypes.data  # aliased, not copied
    np.testing.assert_array_equal(np.asarray(batch.stacked), host)
    with pytest.raises(KeyError, match=r"batch\.stacked"):
        batch["z"]
    assert batch.channels == tuple(batch.host.channels)
    counts = batches.transfers
    assert counts["aliased"] >= 1  # every stacked array placed so far (padded may be copied)
    assert counts["aliased"] + counts["copied"] == counts["arrays"]


def test_transfer_counts_are_what_jax_did(era5_v3: Path) -> None:
    """Per-variable arrays: whether JAX aliased each one, checked here independently."""
    batches = _stream(era5_v3).to_jax()
    aliased = copied = 0
    for batch in batches:
        for name in ("t2m", "u10", "v10"):
            same = batch[name].unsafe_buffer_pointer() == batch.host[name].ctypes.data
            aliased += same
            copied += not same
            assert same == (batch.host[name].ctypes.data % 64 == 0)  # jaxlib's rule on CPU
        same = batch.padded.unsafe_buffer_pointer() == batch.host.padded.ctypes.data
        aliased += same
        copied += not same
    assert batches.transfers["aliased"] == aliased
    assert batches.transfers["copied"] == copied


def test_named_sharding_and_errors(era5_v3: Path) -> None:
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data", None, None))
    batch = next(iter(_stream(era5_v3).to_jax(sharding)))
    assert batch["t2m"].sharding == sharding
    assert batch.padded.sharding == NamedSharding(mesh, PartitionSpec("data"))
    assert "NamedSharding" in repr(batch)

    with pytest.raises(ConfigError, match=r"jax\.Device"):
        _stream(era5_v3).to_jax("cpu:0")
    with pytest.raises(ConfigError, match="prefetch"):
        _stream(era5_v3).to_jax(prefetch=0)
    wide = es.ArraySource({"x": (("t", "y"), np.zeros((4, 8)))}, chunks={"t": 2})  # float64
    with pytest.raises(ConfigError, match="64-bit"):
        next(iter(es.Stream(wide, {"y": 8}, batch_size=2).to_jax()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(
    script: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
        check=False,
    )


TWO_DEVICES = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import earthstream as es
from earthstream.errors import ConfigError

assert len(jax.devices()) == 2, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
sharding = NamedSharding(mesh, P("data"))
stream = es.Stream(sys.argv[1], {"lat": 8, "lon": 8}, variables=["t2m", "u10"],
                   batch_size=8, drop_last=True, seed=2, stack=True)
batches = stream.to_jax(sharding)

@jax.jit
def step(w, x, padded):
    def loss(w):
        pred = (x[:, 1] * w).mean(axis=(1, 2))
        err = (pred - x[:, 0].mean(axis=(1, 2)) / 300.0) ** 2
        return jnp.where(padded, 0.0, err).mean()
    value, grad = jax.value_and_grad(loss)(w)
    return w - 0.01 * grad, value

w, seen, shards_ok = jnp.zeros(()), [], True
for batch in batches:
    x = batch.stacked
    shards = sorted(x.addressable_shards, key=lambda s: s.device.id)
    for k, shard in enumerate(shards):
        rows = shard.index[0]
        shards_ok &= (rows.start, rows.stop) == (4 * k, 4 * k + 4)
        shards_ok &= bool(np.array_equal(np.asarray(shard.data), batch.host.stacked[rows]))
    shards_ok &= [s.device for s in shards] == jax.devices()
    w, value = step(w, x, batch.padded)
    seen += batch.window_ids.tolist()
try:
    es.Stream(sys.argv[1], {"lat": 8, "lon": 8}, variables="t2m", batch_size=7).to_jax(sharding)
    refused = False
except ConfigError:
    refused = True
print(json.dumps({"seen": seen, "n": stream.n_windows, "shards_ok": bool(shards_ok),
                  "loss": float(value), "refused": refused,
                  "aliased": batches.transfers["aliased"]}))
"""


@pytest.mark.slow
def test_two_cpu_devices_split_each_batch(era5_v3: Path) -> None:
    done = _run(
        TWO_DEVICES.replace("sys.argv[1]", repr(str(era5_v3))),
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["shards_ok"]
    assert out["refused"]  # batch_size 7 does not split over 2 devices
    n, b = out["n"], 8
    assert sorted(out["seen"]) == sorted(set(out["seen"]))  # no window twice
    assert len(out["seen"]) == n // b * b  # drop_last: every full batch, once
    assert np.isfinite(out["loss"])
    assert out["aliased"] > 0  # the halves of each stacked batch alias its buffer


TWO_PROCESSES = """
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
process, port, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process)
import jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import earthstream as es
from earthstream.errors import ConfigError

mesh = Mesh(np.array(jax.devices()), ("data",))
sharding = NamedSharding(mesh, P("data"))
# 80 windows in 5 batches of 16: 3 on process 0, 2 on process 1 plus its last one repeated
stream = es.Stream(path, {"lat": 8, "lon": 8}, variables=["t2m", "u10"], batch_size=16, seed=5)
assert (stream.rank, stream.world_size) == (process, 2), stream.placement()
batches = stream.to_jax(sharding)

@jax.jit
def step(w, u, t, padded):
    def loss(w):
        err = ((u * w).mean(axis=(1, 2)) - t.mean(axis=(1, 2)) / 300.0) ** 2
        return jnp.where(padded, 0.0, err).sum() / jnp.maximum((~padded).sum(), 1)
    value, grad = jax.value_and_grad(loss)(w)
    return w - 0.01 * grad, value

w, seen, shapes = jnp.zeros(()), [], []
for batch in batches:
    assert batch["t2m"].sharding == sharding and not batch["t2m"].is_fully_addressable
    shapes.append(batch["t2m"].shape)          # the global batch: both processes' halves
    (local,) = batch["t2m"].addressable_shards
    assert np.array_equal(np.asarray(local.data), batch.host["t2m"])
    w, value = step(w, batch["u10"], batch["t2m"], batch.padded)
    seen.append([batch.window_ids.tolist(), batch.host.padded.tolist()])
try:
    es.Stream(path, {"lat": 8, "lon": 8}, variables="t2m", rank=0, world_size=1).to_jax()
    refused = False
except ConfigError:
    refused = True
with open(out, "w") as f:
    json.dump({"seen": seen, "n": stream.n_windows, "steps": len(batches),
               "shapes": shapes, "loss": float(value), "refused": refused}, f)
jax.distributed.shutdown()
"""


@pytest.mark.slow
def test_two_jax_processes_stream_their_own_parts(era5_v3: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(TWO_PROCESSES),
                str(i),
                str(port),
                str(era5_v3),
                str(tmp_path / f"p{i}.json"),
            ],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    outs = [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]
    assert outs[0]["steps"] == outs[1]["steps"] == len(outs[0]["seen"])
    assert all(o["refused"] for o in outs)  # a stream placed otherwise than JAX is refused
    real: list[int] = []
    for out in outs:
        for (ids, padded), shape in zip(out["seen"], out["shapes"], strict=True):
            assert shape[0] == 2 * len(ids)  # one global batch of both halves
            real += [i for i, p in zip(ids, padded, strict=True) if not p]
    assert sorted(real) == list(range(outs[0]["n"]))  # the epoch exactly once
    assert sum(p for out in outs for _, padded in out["seen"] for p in padded) == 16
