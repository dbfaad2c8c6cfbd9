"""Segment a folder of HPA images: `python -m hpacam.segmentation --images DIR --out DIR [--workers N]`.

Writes `OUT/{ID}.png`, a 16-bit cell label image (0 = background, cells 1..N) in the format of
the synthetic truth's `cells/`, and `OUT/border.csv` with every cell's border flags. Images are
segmented in parallel processes (classic backend) or in batches of one size in this process
(hpa backend, whose models are loaded once); every result also goes to the mask cache
(`data/masks` unless `--no-cache`), so a second run, or a later stage, reuses it.

Config: `--config FILE` and `segmentation.key=value` overrides (docs/segmentation.md), e.g.
`segmentation.backend=hpa segmentation.hpa.nuclei_model=/w/nuc.pth ...`.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from hpacam.config import parse_args
from hpacam.fileio import atomic_write_text
from hpacam.images import list_image_ids
from hpacam.runs import setup_logging
from hpacam.segmentation.core import Segmentation, SegmentationError
from hpacam.segmentation.folder import Segmenter, write_label_png
from hpacam.segmentation.settings import SegmentationConfig, SegmentRunConfig

log = logging.getLogger(__name__)
BORDER_COLUMNS = ("image_id", "cell", "area", "contact_length", "contact_ratio", "area_share", "is_border")


@dataclass
class Outcome:
    """What one image's job reports back (small: the label image is written by the worker)."""

    image_id: str
    n_cells: int = 0
    border_rows: list[dict] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Job:
    images: Path
    out: Path
    with_nuclei: bool


def write_outputs(job: Job, image_id: str, result: Segmentation) -> Outcome:
    write_label_png(job.out / f"{image_id}.png", result.cells)
    if job.with_nuclei:
        write_label_png(job.out / "nuclei" / f"{image_id}.png", result.nuclei)
    rows = [{"image_id": image_id, **row} for row in result.border.rows()]
    return Outcome(image_id, result.n_cells, rows)


def failure(job: Job, image_ids: Sequence[str], exc: Exception) -> list[Outcome]:
    """An error message that names the image files (ImageReadError already names the file)."""
    text = str(exc)
    outcomes = []
    for image_id in image_ids:
        where = str(job.images / f"{image_id}_*")
        message = text if image_id in text or str(job.images) in text else f"{where}: {text}"
        outcomes.append(Outcome(image_id, error=f"{type(exc).__name__}: {message}"))
    return outcomes


def run_ids(segmenter: Segmenter, job: Job, image_ids: Sequence[str]) -> list[Outcome]:
    """Segment and write some images; errors are returned per image, never raised."""
    try:
        results = segmenter.segment_files(job.images, image_ids)
        return [write_outputs(job, i, r) for i, r in zip(image_ids, results)]
    except Exception as exc:  # reported per image by the caller
        if len(image_ids) > 1:  # find the culprit: redo the batch one image at a time
            return [outcome for image_id in image_ids for outcome in run_ids(segmenter, job, [image_id])]
        return failure(job, image_ids, exc)


_WORKER: tuple[Segmenter, Job] | None = None


def _init_worker(cfg: SegmentationConfig, job: Job) -> None:
    """Each process builds its backend once and uses one thread (the processes are the parallelism)."""
    import cv2

    cv2.setNumThreads(1)
    global _WORKER
    _WORKER = (Segmenter(cfg), job)


def _work(image_id: str) -> Outcome:
    assert _WORKER is not None, "worker not initialised"
    segmenter, job = _WORKER
    return run_ids(segmenter, job, [image_id])[0]


def in_processes(cfg: SegmentationConfig, job: Job, image_ids: Sequence[str], workers: int) -> Iterator[Outcome]:
    # spawn, not fork: a forked child inherits OpenCV's and OpenMP's thread pools half-locked
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(cfg, job)) as pool:
        futures = {pool.submit(_work, image_id): image_id for image_id in image_ids}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # a worker that died (e.g. killed for memory)
                yield from failure(job, [futures[future]], exc)


def in_this_process(segmenter: Segmenter, job: Job, image_ids: Sequence[str]) -> Iterator[Outcome]:
    """Batches of `hpa.batch_size` for the hpa backend (it groups them by size), one at a time otherwise."""
    cfg = segmenter.cfg
    size = cfg.hpa.batch_size if cfg.backend == "hpa" else 1
    for start in range(0, len(image_ids), size):
        yield from run_ids(segmenter, job, image_ids[start:start + size])


def border_csv(outcomes: Sequence[Outcome]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BORDER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for outcome in sorted(outcomes, key=lambda o: o.image_id):
        writer.writerows(outcome.border_rows)
    return buffer.getvalue()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hpacam.segmentation", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of {ID}_{red,green,blue,yellow}.png")
    parser.add_argument("--out", type=Path, required=True, help="folder for {ID}.png label images and border.csv")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--ids", nargs="+", default=None, help="only these image IDs")
    parser.add_argument("--with-nuclei", action="store_true", help="also write OUT/nuclei/{ID}.png")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the mask cache")
    parser.add_argument("--cache-dir", type=Path, default=None, help="mask cache folder (default: data/masks)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    run_cfg, args = parse_args(SegmentRunConfig, argv, parser=build_parser())
    cfg = run_cfg.segmentation
    if args.no_cache:
        cfg.cache.enabled = False
    if args.cache_dir is not None:
        cfg.cache.dir = args.cache_dir
    setup_logging()
    try:  # a bad backend setting stops here, before any image is read or process started
        segmenter = Segmenter(cfg)
    except (SegmentationError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if not args.images.is_dir():
        log.error("%s: image folder not found", args.images)
        return 2
    image_ids = args.ids or list_image_ids(args.images)
    if not image_ids:
        log.error("%s: no {ID}_{channel} image files found", args.images)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    job = Job(args.images, args.out, args.with_nuclei)
    workers = max(1, min(args.workers, len(image_ids)))
    if cfg.backend != "hpa" and workers > 1:
        outcomes_iter = in_processes(cfg, job, image_ids, workers)
    else:
        outcomes_iter = in_this_process(segmenter, job, image_ids)
    outcomes = list(tqdm(outcomes_iter, total=len(image_ids), desc="segment", unit="image"))
    return report(outcomes, args.out)


def report(outcomes: Sequence[Outcome], out: Path) -> int:
    done = [o for o in outcomes if o.error is None]
    atomic_write_text(out / "border.csv", border_csv(done))
    for outcome in sorted(outcomes, key=lambda o: o.image_id):
        if outcome.error is not None:
            log.error("%s", outcome.error)
    cells = sum(o.n_cells for o in done)
    log.info("segmented %d of %d images (%d cells) into %s", len(done), len(outcomes), cells, out)
    return 0 if len(done) == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
