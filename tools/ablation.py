"""`make ablation`: which parts of the pipeline earn their place, under the demo's protocol.

For each seed, the demo runs first (its own folder, `ROOT/seed{n}`; a finished one is reused).
Then each variant changes one thing and is treated exactly as the pipeline is: its blend is chosen
on `public` by `hpacam.tuning` (over the grid the variant allows), and the chosen setting is
scored once on `private`. Rows that are fixed settings (the seed's blend, one cell source) are
scored on `private` as they are. The one row that reads per-cell truth for training is named
an oracle and never feeds the pipeline.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpacam.fileio import atomic_write_text

# tools/demo.py and tools/stages.py, beside this script
from demo import METHOD, ROOT, Demo, DemoConfig, run_demo
from stages import scored_set_options, sources_override, stage_command


@dataclass
class Variant:
    key: str
    label: str
    cam: str = "demo"  # which CAM model: the demo's, or "other" (Puzzle <-> plain)
    regressor: str = "demo"  # demo | single (the seed's single-label images) | none | oracle (cell truth)
    cell: str = "demo"  # which cell-level classifier: the demo's, one of CELL_OPTIONS or "none"
    grid: list[str] = field(default_factory=list)  # tuning CLI options that restrict the grid
    fixed: list[str] = field(default_factory=list)  # inference overrides instead of tuning
    # inference overrides that change the models' evidence (tuned on public with them, as the demo is)
    inference: list[str] = field(default_factory=list)


SEED_BLEND = ["blend.floor=0.8", "blend.sigmoid_weight=0.5", "blend.regressor_weight=0.5",
              "blend.standing_weight=0.0", "blend.image_models_share=0.5", "blend.cell_max_share=0.0",
              "blend.cell_model_max_share=0.0", "blend.cell_model_share=0.0", "cell_models=[]"]
VARIANTS = [
    Variant("pipeline", "the demo's pipeline (blend tuned on public)"),
    Variant("other_cam", "the other CAM objective (Puzzle-CAM if the demo trains plain CAM, and the reverse), "
            "same data and compute (a Puzzle step costs two plain steps)",
            cam="other"),
    Variant("seed_regressor", "the seed's regressor: single-label training images only", regressor="single"),
    Variant("no_regressor", "no regressor (per-image sigmoid and standing only)", regressor="none"),
    Variant("no_cell_model", "no cell-level classifier (the CAM pipeline alone, tuned without it)", cell="none",
            grid=["--cell-model-shares", "0"]),
    Variant("cell_pseudo_labels", "the cell model's targets lowered below CAM standing 0.5 (pseudo-labels from "
            "the CAM evidence; never a label the image lacks)", cell="pseudo"),
    Variant("cell_oof_round", "one out-of-fold round: two fold models lower the cell model's targets below "
            "standing 0.5 (its own pseudo-labels, from image labels only)", cell="oof"),
    Variant("no_image_models", "no image-level Keras model", grid=["--image-models-shares", "0"],
            fixed=["image_models=[]"]),
    Variant("no_cell_max", "no max pooling of the regressor's cell probabilities into the image probabilities",
            grid=["--cell-max-shares", "0"]),
    Variant("no_cell_model_max", "the cell model per cell only: its max-pooled probability kept out of the image "
            "probabilities (and so out of broadcast's)", grid=["--cell-model-max-shares", "0"]),
    Variant("seed_tta_combine", "the seed's test-time combination: swish on each pass, then summed (ours: the "
            "passes' maps averaged, then swish); its regressor refitted on the intensities it gives",
            regressor="seed_tta", inference=["tta.combine=activate_then_sum"]),
    Variant("standing_only", "cell evidence: within-image standing only", grid=["--cell-sources", "standing"]),
    Variant("regressor_only", "cell evidence: regressor only", grid=["--cell-sources", "regressor"]),
    Variant("seed_blend", "the seed's fixed blend, untuned (sigmoid + regressor 0.5/0.5, floor 0.8, "
            "image models 0.5)", fixed=SEED_BLEND),
    Variant("oracle_truth_regressor", "ORACLE: regressor trained on the synthetic per-cell truth (no real user "
            "has it)", regressor="oracle"),
]
REFERENCES = [
    ("cell_model_only", "the demo's cell-level classifier alone (share 1, gate as tuned)"),
    ("broadcast_same_models", "the strongest `broadcast` with the same models (the demo pipeline's image "
                              "probabilities, chosen on public by broadcast's score)"),
    ("cell_oracle_same_models", "`cell-oracle`: the same image probabilities, cells ranked perfectly within images"),
    ("pipeline_true_image_labels", "the pipeline's cell stage with the true image labels (oracle)"),
    ("broadcast_true_labels_predicted_masks", "`broadcast` with the true image labels"),
]


def reusable_demo(folder: Path, seed: int) -> Demo | None:
    """The finished demo in `folder` if it was made with today's settings for this seed, else None.

    A demo made before a stage was added, by an older method (`METHOD` of tools/demo.py) or with other
    settings is not this pipeline: rerun it.
    """
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        return None
    saved = json.loads(metrics_path.read_text())
    if saved.get("config") != asdict(DemoConfig(seed=seed)) or saved.get("method") != METHOD or "public" not in saved:
        return None
    demo = Demo(out=folder, cfg=DemoConfig(**saved["config"]))
    demo.metrics = {"private": saved["mAP"], "public": saved["public"]}
    return demo


def ensure_demo(folder: Path, seed: int) -> Demo:
    """The demo of this seed in `folder`, run now unless a finished one of today's settings is there."""
    demo = reusable_demo(folder, seed)
    if demo is not None:
        print(f"\n=== demo seed {seed}: reusing {folder}")
        return demo
    return run_demo(folder, DemoConfig(seed=seed))


def demo_loss_mode(demo: Demo) -> str:
    from hpacam.config import read_yaml

    return read_yaml(demo.out / "cam" / "config.yaml")["loss"]["mode"]


def train_other_cam(demo: Demo, train: Path) -> Path:
    """The same CAM recipe with the other objective; plain CAM steps cost half a Puzzle step."""
    mode = "plain" if demo_loss_mode(demo) == "puzzle" else "puzzle"
    checkpoint = demo.out / "ablation" / f"cam_{mode}" / "last.pt"
    if not checkpoint.is_file():
        cfg = demo.cfg
        epochs = cfg.cam_epochs * 2 if mode == "plain" else max(1, cfg.cam_epochs // 2)
        demo.run(f"train {mode} CAM", *stage_command(
            "train_cam", f"run_dir={checkpoint.parent}", sources_override(train),
            f"data.image_size={cfg.cam_image_size}", "data.fold=-1", f"train.epochs={epochs}", "train.progress=false",
            f"train.seed={cfg.seed}", f"loss.mode={mode}", f"data.cache_images={str(cfg.cam_cache).lower()}",
            config=cfg.cam_recipe))
    return checkpoint


def fit_variant_regressor(demo: Demo, train: Path, checkpoint: Path, name: str, extra: list[str]) -> Path:
    folder = demo.out / "ablation" / f"regressor_{name}"
    if not any((folder / "regressor").glob("*.npz")):
        demo.run(f"extract intensities ({name})", *stage_command(
            "extract_intensities", f"images={train / 'images'}", f"labels={train / 'labels.csv'}",
            f"checkpoints=[{checkpoint}]", f"out_dir={folder / 'intensities'}", "tta.scales=[1.0]",
            f"segmentation.cache.dir={demo.out / 'masks'}", *extra))
        demo.run(f"fit regressor ({name})", *stage_command(
            "train_grad_boost", f"intensities={folder / 'intensities' / 'intensities.csv'}",
            f"out_dir={folder / 'regressor'}", f"regressor.n_estimators={demo.cfg.regressor_estimators}"))
    return next((folder / "regressor").glob("*.npz"))


REGRESSOR_OPTIONS = {"single": ["select=single"], "oracle": ["select=all", "targets=cell_truth_oracle"],
                     "seed_tta": ["tta.combine=activate_then_sum"]}  # plus the demo's image selection


CELL_OPTIONS = {  # the demo's cell recipe with one change, for the variants' `cell` field
    "pseudo": ["cells.pseudo.threshold=0.5", "cells.pseudo.cam_checkpoints=[{cam}]"],
    "oof": ["cells.pseudo.rounds=1", "cells.pseudo.folds=2", "cells.pseudo.round_threshold=0.5"],
}


def train_variant_cell_model(demo: Demo, train: Path, name: str) -> Path:
    """The demo's cell recipe with the targets `CELL_OPTIONS[name]` makes, in the ablation folder."""
    checkpoint = demo.out / "ablation" / f"cell_{name}" / "last.pt"
    if not checkpoint.is_file():
        cfg = demo.cfg
        epochs = [f"train.epochs={cfg.cell_epochs}"] if cfg.cell_epochs else []
        options = [o.format(cam=demo.out / "cam" / "last.pt") for o in CELL_OPTIONS[name]]
        demo.run(f"train cell model ({name})", *stage_command(
            "train_cell", f"run_dir={checkpoint.parent}", sources_override(train), "data.fold=-1",
            f"cells.segmentation.cache.dir={demo.out / 'masks'}", f"cells.crops.cache_dir={demo.out / 'crops'}",
            *options, *epochs, "train.progress=false", f"train.seed={cfg.seed}", config=cfg.cell_recipe))
    return checkpoint


def cell_models_override(demo: Demo, variant: Variant) -> list[str]:
    if variant.cell == "none" or not demo.cfg.cell_recipe:
        return ["cell_models=[]"]
    if variant.cell in CELL_OPTIONS:
        checkpoint = train_variant_cell_model(demo, demo.out / "synth" / "train", variant.cell)
        return [f"cell_models=[{{checkpoint: {checkpoint}}}]"]
    return []


def models_override(demo: Demo, variant: Variant, cams: dict, regressors: dict) -> str:
    checkpoint = cams[variant.cam]
    key = (variant.cam, variant.regressor)
    if variant.regressor == "none":
        return f"cam_models=[{{checkpoint: {checkpoint}}}]"
    if key not in regressors:
        extra = REGRESSOR_OPTIONS.get(variant.regressor, [])  # "demo": the demo's recipe on another CAM model
        if not any(option.startswith("select=") for option in extra):
            extra = [f"select={demo.cfg.regressor_select}", *extra]
        regressors[key] = fit_variant_regressor(demo, demo.out / "synth" / "train", checkpoint,
                                                f"{variant.cam}_{variant.regressor}", extra)
    return f"cam_models=[{{checkpoint: {checkpoint}, regressor: {regressors[key]}}}]"


def score_variant(demo: Demo, variant: Variant, cams: dict, regressors: dict) -> tuple[float, float | None]:
    """(private mAP, public mAP of the blend chosen there; None for a fixed, untuned row)."""
    folder = demo.out / "ablation" / variant.key
    public, private = demo.out / "synth" / "public", demo.out / "synth" / "private"
    models = [models_override(demo, variant, cams, regressors), *cell_models_override(demo, variant),
              *variant.inference]
    config = demo.out / "inference.yaml"
    if not variant.fixed or variant.grid:
        config = folder / "tuned.yaml"
        demo.run(f"tune ({variant.key})", *stage_command(
            "tune", *scored_set_options(public, truth=True), "--out", config, *models,
            *[o for o in variant.fixed if o.startswith("image_models")], *variant.grid,  # options last: they take lists
            config=demo.out / "inference.base.yaml"))
        models_args: list[str] = []
        public_score = chosen_public_score(folder / "tuned.csv")
    else:
        models_args, public_score = [*models, *variant.fixed], None
    pred = folder / "private.csv"
    demo.run(f"inference ({variant.key})", *stage_command(
        "inference", *scored_set_options(private), "--out", pred, "visualise=0", "write_image_probs=false",
        *models_args, config=config))
    return demo.evaluate("ablation", variant.key, private / "truth.csv", pred), public_score


def chosen_public_score(table: Path) -> float:
    import pandas as pd

    frame = pd.read_csv(table)
    return float(frame.loc[frame["chosen"], "mAP"].iloc[0])


def ablate(demo: Demo) -> dict[str, dict[str, float]]:
    """{"private": {row: mAP}, "public": {row: mAP}}: every variant, then the demo's reference rows.

    Variants an earlier run of today's method scored are reused (`saved_variants`), and the results
    file is rewritten after each new one: a new variant costs only itself, a stopped run resumes.
    """
    demo.metrics.setdefault("ablation", {})
    cams = {"demo": demo.out / "cam" / "last.pt"}
    regressors = {("demo", "demo"): next((demo.out / "regressor").glob("*.npz"))}
    scores = saved_variants(demo)
    for variant in VARIANTS:
        if variant.key in scores["private"]:
            print(f"=== ablation {variant.key}: reusing {results_path(demo)}")
            continue
        if variant.cam == "other" and "other" not in cams:
            cams["other"] = train_other_cam(demo, demo.out / "synth" / "train")
        private, public = score_variant(demo, variant, cams, regressors)
        scores["private"][variant.key] = private
        if public is not None:
            scores["public"][variant.key] = public
        atomic_write_text(results_path(demo), json.dumps({"method": METHOD, **scores}, indent=1))
    scores = {part: {key: scores[part][key] for key in [v.key for v in VARIANTS] if key in scores[part]}
              for part in scores}  # rows of variants no longer in the list are dropped
    for part in scores:
        scores[part].update({key: demo.metrics[part][key] for key, _ in REFERENCES if key in demo.metrics[part]})
    return scores


def format_table(results: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    """One row per variant, one column per seed (private), the mean and its difference from the
    pipeline's, then the same difference on public: the set a choice between rows may be made on."""
    seeds = sorted(results)

    def mean_of(part: str, key: str) -> float | None:
        values = [results[s][part].get(key) for s in seeds]
        return None if any(v is None for v in values) else sum(values) / len(values)

    head = ("| variant (private mAP) | " + " | ".join(f"seed {s}" for s in seeds)
            + " | mean | mean - pipeline | public: mean - pipeline |")
    lines = [head, "|---" * (len(seeds) + 4) + "|"]
    pipeline, public_pipeline = mean_of("private", "pipeline"), mean_of("public", "pipeline")
    for key, label in [(v.key, v.label) for v in VARIANTS] + REFERENCES:
        mean = mean_of("private", key)
        if mean is None:
            continue
        public = mean_of("public", key)
        public_cell = "" if key == "pipeline" or public is None or public_pipeline is None \
            else f"{public - public_pipeline:+.4f}"
        cells = ([f"{results[s]['private'][key]:.4f}" for s in seeds]
                 + [f"{mean:.4f}", "" if key == "pipeline" else f"{mean - pipeline:+.4f}", public_cell])
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_doc(path: Path, results: dict[int, dict[str, float]], cfg: DemoConfig, minutes: float) -> Path:
    lines = ["# Ablation", "",
             "Written by `make ablation` (`python tools/ablation.py`); do not edit by hand. Each seed makes "
             f"its own synthetic sets ({cfg.n_train} training, {cfg.n_public} public and {cfg.n_private} private "
             f"images at {cfg.image_size} px) and trains the demo's tiny models on CPU. Each row changes one "
             "thing from the demo's pipeline; its blend is chosen on `public` over the grid the row allows, and "
             "the figure is the competition metric (mask IoU 0.6) on `private`, where nothing was chosen.", "",
             *format_table(results), "",
             f"Machine: {platform.machine()} {platform.system()}, CPU only; this run took {minutes:.0f} min "
             "(demos already in the ablation folder are reused).", "",
             "How to read it: `broadcast` gives every cell of an image the image's probabilities; "
             "`cell-oracle` keeps those probabilities but ranks the cells of each image perfectly, so it bounds "
             "what any cell stage that only reorders cells within images can add. The oracle rows read truth no "
             "real user has: they measure headroom, they are not results.", ""]
    return atomic_write_text(path, "\n".join(lines))


def results_path(demo: Demo) -> Path:
    return demo.out / "ablation" / "results.json"


def saved_variants(demo: Demo) -> dict[str, dict[str, float]]:
    """The variant rows an earlier ablation of this seed's demo saved, if made by today's method; else none.

    The demo itself is reused only when made with today's settings (`reusable_demo`), so a saved
    row was scored on these very models.
    """
    empty: dict[str, dict[str, float]] = {"private": {}, "public": {}}
    path = results_path(demo)
    if not path.is_file():
        return empty
    saved = json.loads(path.read_text())
    if saved.get("method") != METHOD:
        return empty
    return {part: dict(saved.get(part, {})) for part in empty}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--root", type=Path, default=Path("data/ablation"), help="one demo folder per seed under it")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "ablation.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results, cfg = {}, DemoConfig()
    for seed in args.seeds:
        demo = ensure_demo((args.root / f"seed{seed}").resolve(), seed)
        cfg = demo.cfg
        results[seed] = ablate(demo)
    doc = write_doc(args.doc, results, cfg, (time.perf_counter() - start) / 60)
    print("\n".join(format_table(results)))
    print(f"ablation: done in {time.perf_counter() - start:.0f} s; table: {doc}")


if __name__ == "__main__":
    main()
