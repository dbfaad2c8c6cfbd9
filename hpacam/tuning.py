"""Choosing the blend on a public set, as Kaggle teams chose by the public leaderboard.

    python -m hpacam.tuning --config inference.yaml --images PUBLIC/images \
        --sample PUBLIC/sample_submission.csv --truth PUBLIC/truth.csv --out tuned.yaml

The models run once over the public images (`hpacam.inference.image_evidence`, the code
inference runs); then blend settings are scored with the competition metric against the public
truth in three steps (`choose_blend`): the image probabilities (the image-level models' share, the
max-pooled regressor and cell-model probabilities) as `broadcast`, that is with every cell given
its image's probabilities; the CAM cell evidence (gate floor, calibrated source) on the best of
them; the cell models' share and gate. The best is written as a complete inference config
(`tuned.yaml`), every candidate's score beside it (`tuned.csv`, the chosen row marked). Step 1 is
the strongest honest baseline the same models give, and the pipeline keeps its image
probabilities: if the cell stage does not help on public, the tuner says so and keeps broadcast.

The truth read here must be a public set's, never the set a result is reported on and never
training images: that is the whole protocol (README, "Honest science").
"""

from __future__ import annotations

import argparse
import itertools
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpacam.classes import NUM_CLASSES
from hpacam.evaluate import DEFAULT_IOU_THRESHOLD, average_precision, greedy_true_positives, image_iou, parse_image
from hpacam.inference import (BlendConfig, ImageEvidence, InferenceConfig, LoadedModels, checked_inputs, combine,
                              image_evidence, load_models, read_sample)
from hpacam.masks import mask_to_rle
from hpacam.segmentation import Segmenter
from hpacam.submission import read_submission

log = logging.getLogger(__name__)

# Cell evidence mixes (sigmoid, regressor, standing weights); see BlendConfig.
CELL_SOURCES = {
    "standing": (0.0, 0.0, 1.0),
    "regressor": (0.0, 1.0, 0.0),
    "standing+regressor": (0.0, 0.5, 0.5),
    "sigmoid+regressor": (0.5, 0.5, 0.0),  # the 21st-place seed's calibration
    "sigmoid": (1.0, 0.0, 0.0),
}
NEEDS_REGRESSOR = {"regressor", "standing+regressor", "sigmoid+regressor"}


@dataclass
class TuneGrid:
    floors: list[float] = field(default_factory=lambda: [0.0, 0.4, 0.6, 0.8, 0.9, 1.0])
    cell_sources: list[str] = field(default_factory=lambda: list(CELL_SOURCES))
    image_models_shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5])
    cell_max_shares: list[float] = field(default_factory=lambda: [0.0, 0.5])
    # with cell models: their share of the final confidence, tried on the best blend of the rest
    cell_model_shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    cell_model_gates: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    # with cell models: the share of their max-pooled probability in the image probability
    cell_model_max_shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    def __post_init__(self):
        unknown = sorted(set(self.cell_sources) - set(CELL_SOURCES))
        if unknown:
            raise ValueError(f"unknown cell sources {unknown}; choose from {list(CELL_SOURCES)}")
        for name, values in (("floors", self.floors), ("image_models_shares", self.image_models_shares),
                             ("cell_max_shares", self.cell_max_shares),
                             ("cell_model_shares", self.cell_model_shares),
                             ("cell_model_gates", self.cell_model_gates),
                             ("cell_model_max_shares", self.cell_model_max_shares)):
            if not values or not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"grid.{name} must be a non-empty list of numbers in [0, 1], got {values}")


@dataclass(frozen=True)
class Available:
    """Which kinds of evidence the set's evidence holds: a grid axis over a missing kind is moot."""

    regressor: bool
    image_models: bool
    cell_models: bool

    @staticmethod
    def of(evidence: Sequence[ImageEvidence]) -> "Available":
        return Available(any(item.regressor is not None for item in evidence),
                         any(item.keras_probs is not None for item in evidence),
                         any(item.cell_model is not None for item in evidence))


def usable_sources(grid: TuneGrid, have: Available) -> list[str]:
    sources = [s for s in grid.cell_sources if have.regressor or s not in NEEDS_REGRESSOR]
    if not sources:
        raise ValueError(f"grid.cell_sources {grid.cell_sources}: every one needs a regressor, and no model has one")
    return sources


def image_prob_candidates(grid: TuneGrid, base: BlendConfig, have: Available) -> list[tuple[str, BlendConfig]]:
    """Step 1: every image-probability setting as `broadcast` (floor 1, no cell-model term).

    Chosen by broadcast's own score, this is the strongest honest baseline the same models give;
    the cell stage is then built on exactly these image probabilities, so pipeline / broadcast
    measures what the cells add and nothing else.
    """
    shares = grid.image_models_shares if have.image_models else [base.image_models_share]
    cell_max = grid.cell_max_shares if have.regressor else [0.0]
    model_max = grid.cell_model_max_shares if have.cell_models else [0.0]
    sigmoid, regressor, standing = CELL_SOURCES[usable_sources(grid, have)[0]]  # moot at floor 1
    out = []
    for share, max_share, model_share in itertools.product(shares, cell_max, model_max):
        blend = replace(base, mode="gate", floor=1.0, sigmoid_weight=sigmoid, regressor_weight=regressor,
                        standing_weight=standing, image_models_share=share, cell_max_share=max_share,
                        cell_model_max_share=model_share, cell_model_share=0.0)
        name = "broadcast"
        if have.image_models:
            name += f", image models {share:g}"
        if have.regressor:
            name += f", cell max {max_share:g}"
        if have.cell_models:
            name += f", cell model max {model_share:g}"
        out.append((name, blend))
    return out


def cell_evidence_candidates(grid: TuneGrid, best: tuple[str, BlendConfig],
                             have: Available) -> list[tuple[str, BlendConfig]]:
    """Step 2: the CAM cell evidence (gate floor below 1, which calibrated source) on step 1's image
    probabilities."""
    out = []
    for floor in (f for f in grid.floors if f < 1.0):
        for source in usable_sources(grid, have):
            sigmoid, regressor, standing = CELL_SOURCES[source]
            blend = replace(best[1], floor=floor, sigmoid_weight=sigmoid, regressor_weight=regressor,
                            standing_weight=standing)
            out.append((f"{source}, floor {floor:g}; {best[0]}", blend))
    return out


def cell_model_candidates(grid: TuneGrid, best: tuple[str, BlendConfig]) -> list[tuple[str, BlendConfig]]:
    """Step 3: the cell models' share of the final confidence and its gate, on the best of steps 1-2."""
    return [(f"{best[0]}, cell model {share:g} gate {gate:g}",
             replace(best[1], cell_model_share=share, cell_model_gate=gate))
            for share in grid.cell_model_shares if share > 0 for gate in grid.cell_model_gates]


# ----------------------------------------------------------------------------- the models, once


def collect_evidence(cfg: InferenceConfig, images: Path, sample: pd.DataFrame,
                     models: Optional[LoadedModels] = None) -> list[ImageEvidence]:
    """Run segmentation and the models over every sample image; a bad image is an error here."""
    models = models or load_models(cfg)
    segmenter = Segmenter(cfg.segmentation, read_options=cfg.read)
    out = []
    inputs = checked_inputs(models, sample["ID"].tolist(), images, cfg)
    for image_id, problem, keras_probs in tqdm(inputs, total=len(sample), desc="evidence", unit="img"):
        if problem is not None:
            raise problem
        out.append(image_evidence(image_id, images, models, segmenter, keras_probs, cfg))
    return out


# ----------------------------------------------------------------------------- fast exact scoring


@dataclass
class _ImageTruth:
    class_iou: dict  # class -> (cells, truth cells of the class) IoU of each predicted cell
    # class -> each cell's true-positive flag when it does not depend on the confidences (no two
    # cells reach the threshold on the same truth cell, as for disjoint masks); else None
    fixed_hits: dict


class SetScorer:
    """The competition metric for many confidence settings over one set of predicted masks.

    The masks stay the same from one blend setting to the next, so their IoUs with the truth are
    computed once; each setting then costs one greedy matching and one AP per class, exactly as
    `hpacam.evaluate` does them (confidences rounded as the submission writes them). A test holds
    it equal to scoring the written submission.
    """

    def __init__(self, truth: pd.DataFrame, evidence: Sequence[ImageEvidence],
                 iou_threshold: float = DEFAULT_IOU_THRESHOLD, truth_name: str = "truth"):
        self.iou_threshold = iou_threshold
        by_id = {image_id: row for row, image_id in enumerate(truth["ID"])}
        missing = [e.image_id for e in evidence if e.image_id not in by_id]
        if missing:
            raise ValueError(f"{truth_name}: no truth for {len(missing)} images, e.g. {missing[:3]}")
        if len(evidence) != len(truth):
            raise ValueError(f"{truth_name}: {len(truth)} images, but evidence for {len(evidence)}")
        self.n_truth = np.zeros(NUM_CLASSES, dtype=np.int64)
        self.images = []
        for item in evidence:
            row = by_id[item.image_id]
            cells = parse_image(truth["PredictionString"].iat[row], item.height, item.width,
                                f"{truth_name}: {item.image_id}", dedupe=True)
            self.n_truth += np.bincount(cells.labels, minlength=NUM_CLASSES)
            self.images.append(self._image_truth(item, cells))

    def _image_truth(self, item: ImageEvidence, truth_cells) -> _ImageTruth:
        from hpacam.evaluate import ImageCells

        rles = [mask_to_rle(mask, item.height, item.width) for mask in item.masks.values()]
        pred = ImageCells(rles, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
        iou = image_iou(pred, truth_cells) if rles else np.zeros((0, len(truth_cells.rles)))
        class_iou = {label: iou[:, truth_cells.mask_index[truth_cells.labels == label]]
                     for label in range(NUM_CLASSES)}
        return _ImageTruth(class_iou, {label: self._fixed_hits(values) for label, values in class_iou.items()})

    def _fixed_hits(self, iou: np.ndarray):
        if iou.shape[1] == 0:
            return np.zeros(len(iou), dtype=bool)
        target = iou.argmax(axis=1)
        hits = iou[np.arange(len(iou)), target] >= self.iou_threshold
        return hits if len(np.unique(target[hits])) == hits.sum() else None

    def score(self, confidences: Sequence[np.ndarray], min_confidence: float = 0.0) -> float:
        """mAP of per-image (cells, 19) confidences, in the order the evidence was given."""
        scores = [[] for _ in range(NUM_CLASSES)]
        hits = [[] for _ in range(NUM_CLASSES)]
        for image, conf in zip(self.images, confidences):
            rounded = np.array([float(f"{v:.6g}") for v in np.asarray(conf, dtype=np.float64).ravel()])
            rounded = rounded.reshape(-1, NUM_CLASSES)
            for label in range(NUM_CLASSES):
                keep = rounded[:, label] >= min_confidence
                s = rounded[keep, label]
                scores[label].append(s)
                fixed = image.fixed_hits[label]
                hits[label].append(fixed[keep] if fixed is not None else
                                   greedy_true_positives(image.class_iou[label][keep], s, self.iou_threshold))
        aps = [average_precision(np.concatenate(scores[c]), np.concatenate(hits[c]), int(self.n_truth[c]))
               for c in range(NUM_CLASSES) if self.n_truth[c] > 0]
        return float(np.mean(aps))


# ----------------------------------------------------------------------------- choosing


def score_candidates(evidence: Sequence[ImageEvidence], scorer: SetScorer,
                     named: Sequence[tuple[str, BlendConfig]], step: str) -> pd.DataFrame:
    rows = []
    for name, blend in tqdm(named, desc=step, unit="blend"):
        finals = [combine(item, blend)[1] for item in evidence]
        rows.append({"candidate": name, "step": step, "mAP": scorer.score(finals, blend.min_confidence),
                     "floor": blend.floor, "sigmoid_weight": blend.sigmoid_weight,
                     "regressor_weight": blend.regressor_weight, "standing_weight": blend.standing_weight,
                     "image_models_share": blend.image_models_share, "cell_max_share": blend.cell_max_share,
                     "cell_model_max_share": blend.cell_model_max_share, "cell_model_share": blend.cell_model_share,
                     "cell_model_gate": blend.cell_model_gate})
    return pd.DataFrame(rows)


STEPS = ("image probabilities", "cell evidence", "cell models")
WITHOUT_CELL_MODELS = "without cell models: "


def choose_blend(cfg: InferenceConfig, evidence: Sequence[ImageEvidence], scorer: SetScorer,
                 grid: TuneGrid = TuneGrid()) -> tuple[BlendConfig, pd.DataFrame]:
    """The best blend on this (public) set, in three steps, each on the best of the one before
    (the first of equals, in grid order): the image probabilities by broadcast's score, the CAM
    cell evidence on them, the cell models' share and gate.

    Every row of step 1 is `broadcast`, and each later step keeps the best so far among its
    candidates, so the tuned pipeline never scores below the strongest broadcast on this set.
    With cell models, the same steps are also run as if they were absent (steps named
    "without cell models: ..."): the CAM pipeline alone, tuned as fairly as the whole.
    """
    have = Available.of(evidence)
    best, table = choose_steps(cfg.blend, evidence, scorer, grid, have, "")
    if have.cell_models:
        _, alone = choose_steps(cfg.blend, evidence, scorer, grid, replace(have, cell_models=False),
                                WITHOUT_CELL_MODELS)
        table = pd.concat([table, alone], ignore_index=True)
    return best, table


def choose_steps(base: BlendConfig, evidence: Sequence[ImageEvidence], scorer: SetScorer, grid: TuneGrid,
                 have: Available, prefix: str) -> tuple[BlendConfig, pd.DataFrame]:
    """The three steps of `choose_blend`, each building its candidates on the best so far."""
    step = StepRunner(evidence, scorer, prefix)
    step.run(STEPS[0], image_prob_candidates(grid, base, have))
    step.run(STEPS[1], cell_evidence_candidates(grid, step.best, have))
    if have.cell_models:
        step.run(STEPS[2], cell_model_candidates(grid, step.best))
    return step.best[1], pd.concat(step.tables, ignore_index=True)


@dataclass
class StepRunner:
    """Scores each step's candidates (one table per step) and keeps the best (name, blend) of all so far.

    A later step replaces the best only by scoring higher: so the pipeline never falls below the
    strongest broadcast (step 1) on the set it is tuned on.
    """

    evidence: Sequence[ImageEvidence]
    scorer: SetScorer
    prefix: str
    tables: list[pd.DataFrame] = field(default_factory=list)
    best: Optional[tuple[str, BlendConfig]] = None
    best_score: float = -np.inf

    def run(self, step: str, named: Sequence[tuple[str, BlendConfig]]) -> None:
        if not named:
            return
        scored = score_candidates(self.evidence, self.scorer, named, self.prefix + step)
        self.tables.append(scored)
        top = int(scored["mAP"].to_numpy().argmax())
        if scored["mAP"].iat[top] > self.best_score:
            self.best, self.best_score = named[top], float(scored["mAP"].iat[top])


def tune(cfg: InferenceConfig, images: Path, sample_path: Path, truth_path: Path,
         grid: TuneGrid = TuneGrid(), submission: Optional[Path] = None) -> tuple[InferenceConfig, pd.DataFrame]:
    """The best blend on the public set; with `submission`, also that blend's submission of the set."""
    sample = read_sample(sample_path)
    truth = read_submission(truth_path)
    models = load_models(cfg)
    evidence = collect_evidence(cfg, images, sample, models)
    scorer = SetScorer(truth, evidence, truth_name=str(truth_path))
    blend, table = choose_blend(cfg, evidence, scorer, grid)
    if submission is not None:
        write_set_submission(evidence, models, blend, sample, submission)
    return replace(cfg, blend=blend), table


def write_set_submission(evidence: Sequence[ImageEvidence], models: LoadedModels, blend: BlendConfig,
                         sample: pd.DataFrame, out: Path) -> None:
    """What inference would write for this set under `blend` (the same arithmetic, from the same
    evidence), with `.image_probs.csv` and `.image_sources.csv` beside it; saves a second model pass."""
    from hpacam.fileio import atomic_path
    from hpacam.inference import probs_frame, result_of, sources_frame, submission_frame
    from hpacam.submission import write_submission

    results = [result_of(item, models, blend) for item in evidence]
    stem = Path(out).with_suffix("")
    with atomic_path(f"{stem}.image_probs.csv") as tmp:
        probs_frame(results).to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(f"{stem}.image_sources.csv") as tmp:
        sources_frame(results).to_csv(tmp, index=False, float_format="%.6g")
    write_submission(submission_frame(results, sample), out)


def best_row(rows: pd.DataFrame) -> pd.Series:
    """The first best-scoring of these rows of a tuning table."""
    return rows.loc[rows["mAP"].idxmax()]


def rows_without_cell_models(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["step"].str.startswith(WITHOUT_CELL_MODELS)]


def strongest_broadcast(table: pd.DataFrame) -> pd.Series:
    """The best `broadcast` row of the tuned pipeline (step 1): the baseline it is compared with."""
    return best_row(table[table["step"] == STEPS[0]])


def chosen_row(table: pd.DataFrame) -> pd.Series:
    """The row of the blend `choose_blend` returned: the first best of the whole pipeline's steps."""
    return best_row(table.drop(rows_without_cell_models(table).index))


def broadcast_without_cell_models(table: pd.DataFrame) -> pd.Series:
    """The strongest `broadcast` without cell models: the CAM pipeline alone's own baseline."""
    rows = table[table["step"] == WITHOUT_CELL_MODELS + STEPS[0]]
    return strongest_broadcast(table) if rows.empty else best_row(rows)


def best_without_cell_models(table: pd.DataFrame) -> pd.Series:
    """The CAM pipeline alone as the tuner chose it (the whole pipeline's best without cell models)."""
    rows = rows_without_cell_models(table)
    return best_row(table if rows.empty else rows)


def main(argv: Sequence[str] | None = None) -> int:
    from hpacam.config import parse_args, save_config
    from hpacam.fileio import atomic_path
    from hpacam.runs import setup_logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="the public set's image folder")
    parser.add_argument("--sample", type=Path, required=True, help="its sample_submission.csv")
    parser.add_argument("--truth", type=Path, required=True, help="its per-cell truth (submission format)")
    parser.add_argument("--out", type=Path, required=True, help="the tuned inference config to write (.yaml)")
    parser.add_argument("--submission", type=Path, help="also write the tuned blend's submission of this set "
                        "(as inference would, with .image_probs.csv and .image_sources.csv beside it)")
    defaults = TuneGrid()
    parser.add_argument("--floors", type=float, nargs="+", default=defaults.floors, help="gate floors to try")
    parser.add_argument("--cell-sources", nargs="+", default=defaults.cell_sources, choices=list(CELL_SOURCES))
    parser.add_argument("--image-models-shares", type=float, nargs="+", default=defaults.image_models_shares)
    parser.add_argument("--cell-max-shares", type=float, nargs="+", default=defaults.cell_max_shares)
    parser.add_argument("--cell-model-shares", type=float, nargs="+", default=defaults.cell_model_shares,
                        help="shares of the cell models in the final confidence (with cell_models)")
    parser.add_argument("--cell-model-gates", type=float, nargs="+", default=defaults.cell_model_gates,
                        help="exponents of the image probability gating the cell models")
    parser.add_argument("--cell-model-max-shares", type=float, nargs="+", default=defaults.cell_model_max_shares,
                        help="shares of the cell models' max-pooled probability in the image probability")
    cfg, args = parse_args(InferenceConfig, argv, parser=parser)
    stem = args.out.with_suffix("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup_logging(f"{stem}.log.txt")
    try:
        grid = TuneGrid(args.floors, args.cell_sources, args.image_models_shares, args.cell_max_shares,
                        args.cell_model_shares, args.cell_model_gates, args.cell_model_max_shares)
        if args.submission is not None:
            args.submission.parent.mkdir(parents=True, exist_ok=True)
        tuned, table = tune(cfg, args.images, args.sample, args.truth, grid, args.submission)
    except (ValueError, FileNotFoundError, OSError) as exc:
        parser.exit(1, f"tuning: error: {exc}\n")
    best = chosen_row(table)
    table["chosen"] = table.index == best.name
    with atomic_path(f"{stem}.csv") as tmp:
        table.sort_values("mAP", ascending=False).to_csv(tmp, index=False, float_format="%.6f")
    save_config(tuned, args.out)
    broadcast = strongest_broadcast(table)["mAP"]
    log.info("best on %s: %s (mAP %.4f; broadcast %.4f)", args.truth, best["candidate"], best["mAP"], broadcast)
    print(f"tuned on {args.truth}: {best['candidate']} mAP {best['mAP']:.4f} (broadcast {broadcast:.4f}); "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
