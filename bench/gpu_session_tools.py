"""Helpers of bench/gpu_session.sh: the card's description, a utilisation sampler, run checks, the summary.

    python bench/gpu_session_tools.py card --json OUT/gpu.jsonl
    python bench/gpu_session_tools.py sample --out OUT/util.csv [--interval 0.5]
    python bench/gpu_session_tools.py run-record --run DIR --part NAME --items-per-step N --json OUT/gpu.jsonl
    python bench/gpu_session_tools.py summary --json OUT/gpu.jsonl --util OUT/util.csv

Kept apart from the shell script so each piece is plain Python that runs (and is checked) on CPU:
the sampler writes `unix time, utilisation %, memory MiB` one flushed line at a time, stamped
with the same clock as the script's part markers, so a run killed at its limit still leaves
every sample taken and the summary can give each part its own utilisation.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def emit(record: dict, json_path: Path | None) -> None:
    """One JSON line on stdout and, when asked, appended to the results file."""
    line = json.dumps(record)
    print(line, flush=True)
    if json_path is not None:
        with open(json_path, "a") as handle:
            handle.write(line + "\n")


# ----------------------------------------------------------------------------- card


def card_record() -> dict:
    """What the figures depend on: the card, its memory, and the torch / CUDA / cuDNN / NCCL builds."""
    import platform

    import torch

    record = {"bench": "card", "python": platform.python_version(), "torch": torch.__version__,
              "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record.update({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
                       "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported(),
                       "nccl": nccl_version()})
    return record


def nccl_version() -> str | None:
    """NCCL's version as torch reports it (a tuple in recent releases, an int in older ones)."""
    import torch

    try:
        version = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 - a build without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


# ----------------------------------------------------------------------------- sampler


def nvml_reader():
    """A () -> (util %, memory MiB) reader through NVML, or None where pynvml or the driver is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # noqa: BLE001 - no NVML: fall back to nvidia-smi
        return None

    def read():
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        return float(util), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

    return read


def smi_reader():
    """The same through one `nvidia-smi --query-gpu` call per sample; NaNs where there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return lambda: (math.nan, math.nan)

    def read():
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                              "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        util, memory = (float(v) for v in out.strip().splitlines()[0].split(","))
        return util, memory

    return read


def sample(out: Path, interval: float, limit_s: float, dry: bool = False) -> None:
    """Append samples to `out` every `interval` s until killed (or `limit_s` passes).

    `dry` writes zeros instead of reading a GPU, so the CPU check exercises the summary's arithmetic.
    """
    read = (lambda: (0.0, 0.0)) if dry else (nvml_reader() or smi_reader())
    end = time.time() + limit_s
    with open(out, "a", buffering=1) as handle:
        if handle.tell() == 0:
            handle.write("t,util_pct,mem_mib\n")
        while time.time() < end:
            try:
                util, memory = read()
            except Exception:  # noqa: BLE001 - one failed read must not end the sampling
                util, memory = math.nan, math.nan
            handle.write(f"{time.time():.3f},{util:.0f},{memory:.0f}\n")
            time.sleep(interval)


# ----------------------------------------------------------------------------- run folders


def epoch_rates(run: Path, items_per_step: int) -> list[dict]:
    """Per epoch of a run's metrics.csv: steps, seconds (the loop's own timing, loader included), rates."""
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    rates, previous = [], 0
    for row in rows:
        steps, seconds = int(row["step"]) - previous, float(row["seconds"])
        previous = int(row["step"])
        rates.append({"epoch": int(row["epoch"]), "steps": steps, "seconds": seconds,
                      "steps_per_s": round(steps / seconds, 3),
                      "items_per_s": round(steps * items_per_step / seconds, 2),
                      "amp_skipped": int(float(row.get("amp_skipped") or 0))})
    return rates


def run_record(run: Path, part: str, items_per_step: int, device: str) -> dict:
    """Did a training run finish, how fast was each epoch, and does its last.pt load for inference?"""
    from hpacam.cam.checkpoint import load_cam_model, read_checkpoint

    record = {"bench": "run", "part": part, "run": str(run), "ok": False}
    log_text = (run / "log.txt").read_text() if (run / "log.txt").is_file() else ""
    record["trained_on"] = next((line.split("training on ", 1)[1].split(", run folder")[0]
                                 for line in log_text.splitlines() if "training on " in line), None)
    record["epochs"] = epoch_rates(run, items_per_step)
    checkpoint = read_checkpoint(run / "last.pt")
    model = load_cam_model(run / "last.pt", device)
    record.update({"step": checkpoint["step"], "amp_skipped": checkpoint.get("amp_skipped"),
                   "checkpoint_loads": True, "loaded_on": str(next(model.parameters()).device), "ok": True})
    return record


# ----------------------------------------------------------------------------- summary


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for line in open(path):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a kill
    return records


def part_windows(records: list[dict]) -> dict[str, tuple[float, float]]:
    """{part: (start, end)} from the script's markers; a part still open at a kill ends at +inf."""
    starts, windows = {}, {}
    for record in records:
        if record.get("bench") == "session" and record.get("event") == "start":
            starts[record["part"]] = record["t"]
            windows[record["part"]] = (record["t"], math.inf)
        elif record.get("bench") == "session" and record.get("event") == "end" and record["part"] in starts:
            windows[record["part"]] = (starts[record["part"]], record["t"])
    return windows


def read_util(path: Path) -> list[tuple[float, float, float]]:
    if not path.is_file():
        return []
    rows = []
    for row in csv.DictReader(open(path)):
        try:
            rows.append((float(row["t"]), float(row["util_pct"]), float(row["mem_mib"])))
        except (TypeError, ValueError):
            pass
    return rows


def util_by_part(records: list[dict], util: list[tuple[float, float, float]]) -> list[dict]:
    """Mean and max utilisation and max memory of the samples inside each part's window."""
    summary = []
    for part, (start, end) in part_windows(records).items():
        inside = [u for u in util if start <= u[0] <= end and not math.isnan(u[1])]
        if not inside:
            summary.append({"bench": "util", "part": part, "samples": 0})
            continue
        utils = [u[1] for u in inside]
        summary.append({"bench": "util", "part": part, "samples": len(inside),
                        "util_mean": round(sum(utils) / len(utils), 1), "util_max": max(utils),
                        "mem_max_mib": max(u[2] for u in inside)})
    return summary


def throughput_rows(records: list[dict]) -> list[str]:
    """Markdown rows of docs/benchmarks.md's GPU table, one per measurement of bench/gpu_throughput.py."""
    rows = []
    for r in records:
        if r.get("bench") != "gpu_throughput":
            continue
        figure = f"{r['items_per_s']}" if r.get("ok") else f"failed: {r.get('error', '')[:80]}"
        part = r["part"] + (f" (DDP, {r.get('backend')})" if r.get("ddp") else "")
        amp = r["amp"] + ("" if r.get("package_path", True) else " (not the loop's path)")
        batch = f"{r['batch_size']} x {r['accumulation']}" if r["part"] == "train" else "-"
        extra = f"{r['s_per_item']} s/image" if "s_per_item" in r else ""
        rows.append(f"| {r.get('label') or Path(r['recipe']).name} | {part} | {amp} | {r['image_size']} | {batch} "
                    f"| {figure} | {extra} | {r.get('peak_gib')} |")
    return rows


def run_rows(records: list[dict]) -> list[str]:
    """One line per training run (ddp, e2e): where it trained, rate per epoch, and whether last.pt loads."""
    lines = []
    for r in records:
        if r.get("bench") != "run":
            continue
        if not r.get("ok"):
            lines.append(f"- {r['part']}: failed: {r.get('error', '')[:200]}")
            continue
        epochs = ", ".join(f"epoch {e['epoch']}: {e['items_per_s']} images/s ({e['steps_per_s']} steps/s)"
                           for e in r["epochs"])
        lines.append(f"- {r['part']}: trained on {r['trained_on']}, {r['step']} steps, {epochs}; "
                     f"AMP skipped {r['amp_skipped']}; last.pt loads on {r['loaded_on']}")
    return lines


def util_rows(util: list[dict]) -> list[str]:
    return [f"| {u['part']} | {u['samples']} | {u.get('util_mean', '-')} | {u.get('util_max', '-')} "
            f"| {u.get('mem_max_mib', '-')} |" for u in util]


def summary(json_path: Path, util_path: Path) -> None:
    """Print the figures as docs/benchmarks.md table rows, and append utilisation per part to the results."""
    records = read_jsonl(json_path)
    card = next((r for r in records if r.get("bench") == "card"), {})
    print(f"card: {card.get('name', 'no GPU')}, {card.get('memory_gib')} GiB, torch {card.get('torch')}, "
          f"CUDA {card.get('cuda_build')}, cuDNN {card.get('cudnn')}, NCCL {card.get('nccl')}")
    print("| recipe | part | amp | px | batch x accum | images (crops)/s | | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(throughput_rows(records)))
    print("\n".join(run_rows(records)))
    util = util_by_part(records, read_util(util_path))
    print("| part | samples | GPU util mean % | max % | memory max MiB |")
    print("|---|---|---|---|---|")
    print("\n".join(util_rows(util)))
    for record in util:
        with open(json_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    card = sub.add_parser("card")
    card.add_argument("--json", type=Path)
    sampler = sub.add_parser("sample")
    sampler.add_argument("--out", type=Path, required=True)
    sampler.add_argument("--interval", type=float, default=0.5)
    sampler.add_argument("--limit-s", type=float, default=900.0)
    sampler.add_argument("--dry", action="store_true", help="zeros, no GPU read (the CPU check)")
    runs = sub.add_parser("run-record")
    runs.add_argument("--run", type=Path, required=True)
    runs.add_argument("--part", required=True)
    runs.add_argument("--items-per-step", type=int, required=True)
    runs.add_argument("--device", default="cpu")
    runs.add_argument("--json", type=Path)
    summ = sub.add_parser("summary")
    summ.add_argument("--json", type=Path, required=True)
    summ.add_argument("--util", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "card":
        emit(card_record(), args.json)
    elif args.command == "sample":
        sample(args.out, args.interval, args.limit_s, args.dry)
    elif args.command == "run-record":
        try:
            record = run_record(args.run, args.part, args.items_per_step, args.device)
        except Exception as exc:  # noqa: BLE001 - a run that left no loadable checkpoint is a result
            record = {"bench": "run", "part": args.part, "run": str(args.run), "ok": False,
                      "error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        emit(record, args.json)
        return 0 if record["ok"] else 1
    else:
        summary(args.json, args.util)
    return 0


if __name__ == "__main__":
    sys.exit(main())
