"""Two CPU processes (accelerate, gloo) accumulate shards and all-reduce: equals the single-process result."""

import json
import subprocess
import sys

import numpy as np
import pytest
from dist_stats_script import dataset
from fixtures import TESTS, free_port, subprocess_env

from layerwise.measures.cka import LinearStats
from layerwise.measures.cosine import cosine_matrix


@pytest.mark.slow
def test_two_process_all_reduce_matches_single(tmp_path):
    out = tmp_path / "out.json"
    port = free_port()
    env = subprocess_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                         ACCELERATE_CONFIG_FILE=str(tmp_path / "none.yaml"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
           str(TESTS / "dist_stats_script.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    feats = dataset()
    stats = LinearStats.of(feats)
    assert got["n"] == len(feats[0])
    np.testing.assert_allclose(got["cka"], stats.cka(), atol=1e-10)
    np.testing.assert_allclose(got["cka_debiased"], stats.cka_debiased(), atol=1e-10)
    np.testing.assert_allclose(got["cos"], cosine_matrix(feats)[0], atol=1e-10)
