"""bench/gpu_throughput.py and bench/gpu_session_tools.py run on CPU (no GPU needed, no timing checked).

The GPU session (bench/gpu_session.sh) is only ever run on a lent GPU machine; this keeps its
Python pieces from rotting between such sessions: the training step through the loop's own
functions, the CAM and cell inference calls, and the summary that turns the JSON lines into
docs/benchmarks.md's table rows.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_session_tools  # noqa: E402
import gpu_throughput  # noqa: E402


def test_throughput_and_summary_on_cpu(tmp_path, capsys):
    results = tmp_path / "gpu.jsonl"
    for recipe, extra in (("configs/cam/tiny_cpu.yaml", ["--image-size", "32", "--infer-size", "64"]),
                          ("configs/cell/tiny_cpu.yaml", ["--crops", "4"])):
        rc = gpu_throughput.main(["--recipe", str(REPO / recipe), "--device", "cpu", "--steps", "1",
                                  "--warmup", "0", "--batch-size", "2", "--infer-images", "1", "--scales", "1.0",
                                  "--amp", "off", "--json", str(results), *extra])
        assert rc == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["kind"], r["part"]) for r in records] == [("cam", "train"), ("cam", "infer"),
                                                         ("cell", "train"), ("cell", "infer")]
    assert all(r["ok"] and r["items_per_s"] > 0 for r in records)
    assert records[0]["items"] == 2 and records[0]["accumulation"] == 1
    (tmp_path / "util.csv").write_text("t,util_pct,mem_mib\n1,50,100\n2,70,300\n")
    with open(results, "a") as handle:
        handle.write('{"bench": "session", "part": "r101", "event": "start", "t": 0.5}\n'
                     '{"bench": "session", "part": "r101", "event": "end", "t": 2.5}\n')
    capsys.readouterr()
    gpu_session_tools.summary(results, tmp_path / "util.csv")
    printed = capsys.readouterr().out
    assert printed.count("| tiny_cpu.yaml |") == 4
    util = [json.loads(line) for line in results.read_text().splitlines()][-1]
    assert util == {"bench": "util", "part": "r101", "samples": 2, "util_mean": 60.0, "util_max": 70.0,
                    "mem_max_mib": 300.0}


def test_session_script_parses_and_lists_its_wheels():
    assert subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_session.sh")]).returncode == 0
    wanted = [line for line in (REPO / "bench" / "gpu_wheels.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    assert all("==" in line for line in wanted)
    assert {line.split("==")[0] for line in wanted} >= {"resnest", "efficientnet-pytorch"}
