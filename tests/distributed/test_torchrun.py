"""A real multi-process run: ``torchrun --nproc-per-node 2``, gloo on CPU, 2 DataLoader
workers per rank, a tiny DDP model; then pre-emption and resume in fresh processes.

The job (``ddp_job.py``) writes what each rank consumed; these tests check it.
A rank that hangs (e.g. one fewer batch, so its DDP all-reduce never matches)
makes the launch time out, and the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

import earthstream as es

JOB = Path(__file__).with_name("ddp_job.py")
TIMEOUT = 240  # seconds per launch; the runs take ~10 s
K = 3  # batches per rank before the 2-rank job is "pre-empted"
K_SINGLE = 4  # batches before the 1-process job is

pytestmark = pytest.mark.slow


def launch(args: list[str], cwd: Path) -> None:
    """Run a command; if it hangs, dump the stacks of all its processes and kill them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in its own session: signal the whole tree.
        tree = [proc, *psutil.Process(proc.pid).children(recursive=True)]
        for p in tree[1:]:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGUSR1)  # ddp_job.py dumps every thread's stack
        time.sleep(3)
        for p in tree:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                p.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{args[-7:]} hung for {TIMEOUT} s (a rank waiting in DDP?):\n{out[-20000:]}")
    assert proc.returncode == 0, out[-5000:]


def torchrun(phase: str, store: Path, out: Path) -> None:
    launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(JOB),
            phase,
            "--store",
            str(store),
            "--out",
            str(out),
            "--k",
            str(K),
        ],
        out,
    )


@pytest.fixture(scope="module")
def runs(era5_v3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ddp")
    torchrun("train", era5_v3, out)
    single = [sys.executable, str(JOB), "single", "--store", str(era5_v3), "--out", str(out)]
    launch([*single, "--k", str(K_SINGLE)], out)
    torchrun("resume", era5_v3, out)

    def read(name: str) -> Any:
        return json.loads((out / name).read_text())

    return {
        "train": [read(f"train-rank{r}.json") for r in range(2)],
        "states": [read(f"state-rank{r}.json") for r in range(2)],
        "single": read("single.json"),
        "single_state": read("state-single.json"),
        "resume": [read(f"resume-rank{r}.json") for r in range(2)],
    }


def real_ids(batches: list[dict[str, Any]]) -> list[int]:
    return [i for b in batches for i, pad in zip(b["ids"], b["padded"], strict=True) if not pad]


def assert_exactly_once(ids: list[int], n: int) -> None:
    counts = Counter(ids)
    assert sorted(counts) == list(range(n)), f"missing {set(range(n)) - set(counts)}"
    assert max(counts.values()) == 1, f"repeated {[i for i, c in counts.items() if c > 1]}"


def test_two_ranks_cover_each_epoch_exactly_once(runs: dict[str, Any]) -> None:
    ranks = runs["train"]
    n = ranks[0]["n_windows"]
    assert n == 80 and [r["world_size"] for r in ranks] == [2, 2]  # from torch.distributed
    for epoch in ("0", "1"):
        per_rank = [r["epochs"][epoch] for r in ranks]
        # Equal batch counts (else DDP would have hung), = len(loader) on every rank.
        assert [len(b) for b in per_rank] == [5, 5] == [r["len"] for r in ranks]
        assert_exactly_once(real_ids(per_rank[0]) + real_ids(per_rank[1]), n)
        padded = [b for rank in per_rank for b in rank if any(b["padded"])]
        assert len(padded) == 1 and all(padded[0]["padded"])  # 9 batches: one rank pads
        assert set(padded[0]["ids"]) <= set(real_ids(per_rank[0]) + real_ids(per_rank[1]))
    assert ranks[0]["epochs"]["0"] != ranks[0]["epochs"]["1"]  # set_epoch reached the workers
    # DDP ran in lockstep: the ranks ended with the same parameters.
    assert ranks[0]["params"][0] == ranks[0]["params"][1]


def test_distributed_order_matches_explicit_ranks_in_one_process(
    runs: dict[str, Any], era5_v3: Path
) -> None:
    """The order is a pure function of (seed, epoch, dataset): the same in any process."""
    for rank, result in enumerate(runs["train"]):
        stream = es.Stream(
            era5_v3,
            {"lat": 8, "lon": 8},
            variables=["t2m"],
            batch_size=9,
            seed=5,
            shuffle_buffer=3,
            rank=rank,
            world_size=2,
        )
        ds = stream.to_torch()
        ds.set_epoch(1)
        here = [(b.index, b.window_ids.tolist()) for b in ds.loader(num_workers=2)]
        assert here == [(b["index"], b["ids"]) for b in result["epochs"]["1"]]


def test_all_ranks_save_the_same_state(runs: dict[str, Any]) -> None:
    a, b = runs["states"]
    assert a == b
    assert (a["seed"], a["epoch"], a["position"], a["world_size"]) == (5, 1, K, 2)


def test_resume_on_two_ranks_yields_the_uninterrupted_tail(runs: dict[str, Any]) -> None:
    """Pre-empted after K steps, restored in fresh processes from rank 0's state."""
    for rank in range(2):
        full = runs["train"][rank]["epochs"]["1"]
        head = runs["train"][rank]["head"]
        tail = runs["resume"][rank]["2to2"]
        assert head == full[:K]
        assert tail == full[K:]  # same batches, windows and padding flags, in order


def test_resume_two_ranks_on_one(runs: dict[str, Any]) -> None:
    heads = [r["head"] for r in runs["train"]]
    tail = runs["single"]["2to1"]
    assert_exactly_once(real_ids(heads[0]) + real_ids(heads[1]) + real_ids(tail), 80)


def test_resume_one_rank_on_two(runs: dict[str, Any]) -> None:
    head = runs["single"]["head"]
    assert len(head) == K_SINGLE and runs["single_state"]["world_size"] == 1
    tails = [r["1to2"] for r in runs["resume"]]
    assert len(tails[0]) == len(tails[1])  # even after the re-split
    assert_exactly_once(real_ids(head) + real_ids(tails[0]) + real_ids(tails[1]), 80)
