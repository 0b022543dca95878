"""DDP on CPU with gloo and 2 processes: sharding, gathered predictions, torchrun end to end."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from cxrlab.data.phantom import LABELS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    from cxrlab.train import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    n = 11
    rows = np.arange(n)[rank::2]
    local = np.stack([rows * 10.0, rows + 0.5], axis=1)  # a value that identifies its row
    full = distributed.gather_rows(local, rows, n)
    order = distributed.shard(torch.arange(n), 4)
    parts = [None, None]
    dist.all_gather_object(parts, order.tolist())
    if rank == 0:
        np.save(out, full)
        with open(out + ".json", "w") as f:
            json.dump(parts, f)
    dist.destroy_process_group()


def test_gather_covers_every_row_exactly_once_and_shards_are_equal(tmp_path):
    out = str(tmp_path / "full.npy")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    full = np.load(out)
    assert np.array_equal(full[:, 0], np.arange(11) * 10.0) and np.array_equal(full[:, 1], np.arange(11) + 0.5)
    parts = json.load(open(out + ".json"))
    assert len(parts[0]) == len(parts[1]) == 6  # 11 rows -> 6 each, one wrapped around
    assert set(parts[0]) | set(parts[1]) == set(range(11))


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_torchrun_two_processes_trains_and_rank0_writes(tiny_phantom, tmp_path):
    cfg = {"name": "ddp", "seed": 0, "runs_dir": str(tmp_path / "runs"),
           "data": {"source": "nih14", "root": str(tiny_phantom), "labels": list(LABELS), "image_size": 32,
                    "workers": 1, "cache_dir": str(tmp_path / "cache")},
           "model": {"name": "simple_cnn", "width": 4, "convs": 1},
           "train": {"epochs": 2, "batch_size": 8},
           "explain": {"enabled": False}, "evaluate": {"n_boot": 10}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "CXRLAB_QUIET": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "cxrlab",
                        "train", "-c", str(tmp_path / "c.yaml")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in rows] == [1, 2] and all(x["world_size"] == 2 for x in rows)
    split = json.loads((run / "split.json").read_text())
    val = pd.read_csv(run / "predictions_val.csv")
    assert sorted(val["image"]) == sorted(split["val"])  # every validation image once
    assert (run / "report.html").is_file()
