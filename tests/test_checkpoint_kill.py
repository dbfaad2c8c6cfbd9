"""SIGKILL a real CAM training process many times, some kills landing inside a checkpoint write.

After every kill the latest checkpoint must load with the project's own loader, the next run must
resume from exactly that step, and the run that finally completes must hold the same weights,
optimizer state and per-epoch losses as a run that was never interrupted (issue 9).

One optimizer step per epoch makes the trainer write `last.pt` (and metrics.csv) after every step,
so the kills have many writes to land in. About 20 s on two cores (35 s with both cores busy
elsewhere), the imports paid once (see Launcher).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from hpacam.cam.checkpoint import load_cam_model, read_checkpoint
from hpacam.cam.config import TrainCamConfig
from hpacam.cam.train import train
from hpacam.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "train-cam-model" / "train_cam.py"
RECIPE = REPO / "configs" / "cam" / "tiny_cpu.yaml"
EPOCHS = 60
# Where each kill lands, after the first (at a random moment once a checkpoint exists): inside a
# write of last.pt, inside a write of metrics.csv (written just before last.pt), or at random.
KILLS = ["last.pt"] * 3 + ["metrics.csv"] * 2 + [None] * 2
ATTEMPTS = 4


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight synthetic 64 px images: one optimizer step of batch 8 per epoch."""
    from hpacam.synth import generate_dataset

    root = tmp_path_factory.mktemp("kill_data")
    generate_dataset(root, 8, 64, seed=5, progress=False)
    return root


def overrides(data: Path, run_dir: Path) -> list[str]:
    return [f"run_dir={run_dir}", f"data.sources=[{{images: {data / 'images'}, labels: {data / 'labels.csv'}}}]",
            "data.image_size=32", "data.fold=-1", "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
            "train.batch_size=8", f"train.epochs={EPOCHS}", "train.progress=false", "train.log_every=0"]


# A launcher process imports torch, timm and the trainer once, then forks one training process per
# run: the children are real processes running train_cam.py's main(), but each starts in
# milliseconds instead of the ~6 s of imports a fresh interpreter needs, which keeps the test short.
LAUNCHER = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import timm, hpacam.cam.train, train_cam
for line in sys.stdin:
    command, argument = line.split(" ", 1)
    if command == "run":
        pid = os.fork()
        if pid == 0:
            sys.stdout = sys.stderr  # the pipe to the test carries the launcher's answers only
            try:
                code = train_cam.main(json.loads(argument))
            except BaseException:
                code = 1
            os._exit(code)
        print(pid, flush=True)
    else:  # wait PID: reap the child, print its status (negative: the signal that ended it)
        _, status = os.waitpid(int(argument), 0)
        print(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
"""


class Launcher:
    def __init__(self, log_path: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(SCRIPT.parent)], cwd=REPO, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def ask(self, line: str) -> int:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def start(self, argv: list[str]) -> int:
        return self.ask("run " + json.dumps(argv))

    def wait(self, pid: int) -> int:
        return self.ask(f"wait {pid}")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.log.close()


def running(pid: int) -> bool:
    """True while the process lives (a finished, not yet reaped child shows state Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def training_argv(data: Path, run_dir: Path) -> list[str]:
    return ["--config", str(RECIPE), *overrides(data, run_dir), "train.resume=auto"]


def starts_logged(run_dir: Path) -> int:
    log = run_dir / "log.txt"
    return log.read_text().count("; starting at step") if log.is_file() else 0


def wait_for(condition, pid: int, timeout: float = 60.0) -> bool:
    """Poll `condition` every ~0.2 ms; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not running(pid):
            return False
        time.sleep(0.0002)
    raise AssertionError("training made no progress in time")


def being_written(run_dir: Path, name: str) -> bool:
    """True while atomic_path's temporary file for `name` exists (between mkstemp and rename)."""
    return any(entry.startswith(f".{name}.") for entry in os.listdir(run_dir))


def kill_once(launcher: Launcher, data: Path, run_dir: Path, cycle: int, target: str | None,
              rng: random.Random) -> bool:
    """Start (or resume) training and SIGKILL it; False if it finished before the kill."""
    pid = launcher.start(training_argv(data, run_dir))
    killed = False
    try:
        if not wait_for(lambda: starts_logged(run_dir) > cycle and (run_dir / "last.pt").is_file(), pid):
            return False
        if target is not None:
            if not wait_for(lambda: being_written(run_dir, target), pid):
                return False
        else:
            time.sleep(rng.uniform(0.0, 0.4))
        os.kill(pid, signal.SIGKILL)  # a no-op on a finished child, which `wait` then reports
        killed = True
    finally:
        if not killed and running(pid):
            os.kill(pid, signal.SIGKILL)
        status = launcher.wait(pid)
    return status == -signal.SIGKILL


def resumed_steps(run_dir: Path) -> list[int]:
    lines = [line for line in (run_dir / "log.txt").read_text().splitlines() if "resumed from" in line]
    return [int(line.split(" at step ")[1].split()[0]) for line in lines]


def test_sigkill_during_training_and_checkpoint_writes_always_leaves_a_resumable_checkpoint(images, tmp_path):
    run_dir = tmp_path / "killed"
    rng = random.Random(0)
    plan = [None] + rng.sample(KILLS, len(KILLS))
    steps_seen = []
    launcher = Launcher(tmp_path / "launcher.log")
    for target in plan:
        for _ in range(ATTEMPTS):  # a busy machine may let the write finish between seeing it and the kill
            cycle = len(steps_seen)
            assert kill_once(launcher, images, run_dir, cycle, target, rng), f"cycle {cycle} ended before the kill"
            checkpoint = read_checkpoint(run_dir / "last.pt")  # weights_only=True, format checked
            load_cam_model(run_dir / "last.pt")
            steps_seen.append(checkpoint["step"])
            stale = [p for p in run_dir.iterdir() if p.name.startswith(".")]
            assert all(p.name.endswith(".tmp") for p in stale), stale  # only atomic_path temp files are left
            if target is None or being_written(run_dir, target):  # its temporary file is still there
                break
        else:
            raise AssertionError(f"no kill landed inside a {target} write in {ATTEMPTS} attempts")
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] < EPOCHS

    status = launcher.wait(launcher.start(training_argv(images, run_dir)))
    launcher.close()
    assert status == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    assert resumed_steps(run_dir) == steps_seen  # every run resumed from the checkpoint left by the kill
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # stale temp files were removed

    straight = train_without_kills(images, tmp_path / "straight")
    killed = read_checkpoint(run_dir / "last.pt")
    assert killed["step"] == straight["step"] == EPOCHS
    for key, value in straight["model"].items():
        assert torch.equal(killed["model"][key], value), key
    for key, value in straight["optimizer"]["state"].items():
        assert all(torch.equal(killed["optimizer"]["state"][key][k], v) for k, v in value.items()), key
    columns = ["epoch", "step", "train_loss"]
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "metrics.csv")[columns],
                                  pd.read_csv(tmp_path / "straight" / "metrics.csv")[columns])


def train_without_kills(data: Path, run_dir: Path) -> dict:
    """The same run in this process, single-threaded like the killed one, so results are bitwise comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(TrainCamConfig, RECIPE, overrides(data, run_dir)))
    finally:
        torch.set_num_threads(threads)
    return read_checkpoint(run_dir / "last.pt")
