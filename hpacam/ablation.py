"""`make ablation`: which parts of the pipeline earn their place, measured on the demo's data.

For each seed, the demo runs first (its own folder, `ROOT/seed{n}`; a finished one is reused),
then each ablation changes one thing and reruns only what that change needs, with the same
commands a user types:

- Puzzle-CAM vs plain CAM: a second tiny model trained with `loss.mode=plain`, same data and seed;
- swish vs relu vs raw maps: intensities re-extracted and a regressor refitted for each activation;
- sigmoid vs regressor vs both; with and without the image-level (Keras) model; with and without
  border down-weighting: inference overrides on the demo's models.

Every row is the mAP of the metric against the synthetic truth, and `docs/ablation.md` is
rewritten with one column per seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpacam.demo import ROOT, Demo, DemoConfig, run_demo
from hpacam.fileio import atomic_write_text


@dataclass
class Variant:
    key: str
    label: str
    cam: str = "puzzle"  # which trained CAM model: puzzle or plain
    activation: str = "swish"
    overrides: list[str] = field(default_factory=list)


VARIANTS = [
    Variant("pipeline", "the demo's pipeline: Puzzle-CAM, swish, regressor, image-level model, no border factor"),
    Variant("plain_cam", "plain CAM instead of Puzzle-CAM (classification loss only)", cam="plain"),
    Variant("relu", "relu maps instead of swish (regressor refitted)", activation="relu"),
    Variant("raw", "raw maps instead of swish (regressor refitted)", activation="raw"),
    Variant("sigmoid_only", "per-image sigmoid only, no regressor",
            overrides=["blend.sigmoid_weight=1.0", "blend.regressor_weight=0.0"]),
    Variant("sigmoid_and_regressor", "per-image sigmoid and regressor averaged (library default)",
            overrides=["blend.sigmoid_weight=0.5", "blend.regressor_weight=0.5"]),
    Variant("no_image_models", "without the image-level Keras model (CAM image probabilities only)",
            overrides=["image_models=[]"]),
    Variant("border", "border cells down-weighted (`blend.border_factor=0.8`)", overrides=["blend.border_factor=0.8"]),
]
REFERENCES = [
    ("broadcast_same_models", "`broadcast` with the demo pipeline's image probabilities"),
    ("cell_oracle_same_models", "`cell-oracle`: the same image probabilities, cells ranked perfectly within images"),
    ("broadcast_true_labels_predicted_masks", "`broadcast` with the true image labels"),
]


def ensure_demo(folder: Path, seed: int) -> Demo:
    """The demo of this seed in `folder`, run now unless a finished one (metrics.json) is there."""
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        saved = json.loads(metrics_path.read_text())
        if saved.get("config", {}).get("seed") == seed:
            print(f"\n=== demo seed {seed}: reusing {folder}")
            demo = Demo(out=folder, cfg=DemoConfig(**saved["config"]))
            demo.metrics.update(saved["mAP"])
            return demo
    return run_demo(folder, seed)


def train_plain_cam(demo: Demo, train: Path) -> Path:
    checkpoint = demo.out / "ablation" / "cam_plain" / "last.pt"
    if not checkpoint.is_file():
        cfg = demo.cfg
        demo.run("train plain CAM", "train-cam-model/train_cam.py", "--config", "configs/cam/tiny_cpu.yaml",
                 f"run_dir={checkpoint.parent}", f"data.sources=[{{images: {train / 'images'}, labels: {train / 'labels.csv'}}}]",
                 f"data.image_size={cfg.cam_image_size}", "data.fold=-1", f"train.epochs={cfg.cam_epochs}",
                 "train.progress=false", f"train.seed={cfg.seed}", "loss.mode=plain")
    return checkpoint


def fit_variant_regressor(demo: Demo, train: Path, checkpoint: Path, name: str, activation: str) -> Path:
    """Intensities and a regressor for one (model, activation) pair, as the demo fits its own."""
    folder = demo.out / "ablation" / name
    regressor = folder / "regressor"
    if not any(regressor.glob("*.npz")):
        demo.run(f"extract intensities ({name})", "train-gradboost-regressor/extract_intensities.py",
                 f"images={train / 'images'}", f"labels={train / 'labels.csv'}", f"checkpoints=[{checkpoint}]",
                 f"out_dir={folder / 'intensities'}", "select=all", f"max_images={demo.cfg.extract_images}",
                 "tta.scales=[1.0]", f"activation={activation}", f"segmentation.cache.dir={demo.out / 'masks'}")
        demo.run(f"fit regressor ({name})", "train-gradboost-regressor/train_grad_boost.py",
                 f"intensities={folder / 'intensities' / 'intensities.csv'}", f"out_dir={regressor}")
    return next(regressor.glob("*.npz"))


def score_variant(demo: Demo, test: Path, variant: Variant, checkpoint: Path, regressor: Path) -> float:
    pred = demo.out / "ablation" / "predictions" / f"{variant.key}.csv"
    demo.run(f"inference ({variant.key})", "inference/inference.py", "--config", str(demo.out / "inference.yaml"),
             "--images", str(test / "images"), "--sample", str(test / "sample_submission.csv"), "--out", str(pred),
             f"cam_models=[{{checkpoint: {checkpoint}, regressor: {regressor}}}]", f"activation={variant.activation}",
             "visualise=0", "write_image_probs=false", *variant.overrides)
    return demo.evaluate(f"ablation_{variant.key}", test / "truth.csv", pred)


def ablate(demo: Demo) -> dict[str, float]:
    train, test = demo.out / "synth" / "train", demo.out / "synth" / "test"
    cams = {"puzzle": demo.out / "cam" / "last.pt", "plain": train_plain_cam(demo, train)}
    regressors = {("puzzle", "swish"): next((demo.out / "regressor").glob("*.npz"))}
    scores = {}
    for variant in VARIANTS:
        pair = (variant.cam, variant.activation)
        if pair not in regressors:
            regressors[pair] = fit_variant_regressor(demo, train, cams[variant.cam], "_".join(pair), variant.activation)
        scores[variant.key] = score_variant(demo, test, variant, cams[variant.cam], regressors[pair])
    scores.update({key: demo.metrics[key] for key, _ in REFERENCES if key in demo.metrics})
    return scores


def format_table(results: dict[int, dict[str, float]]) -> list[str]:
    """One row per variant, one column per seed, then the mean and its difference from the pipeline's."""
    seeds = sorted(results)
    pipeline = sum(results[s]["pipeline"] for s in seeds) / len(seeds)
    head = "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | mean - pipeline |"
    lines = [head, "|---" * (len(seeds) + 3) + "|"]
    for key, label in [(v.key, v.label) for v in VARIANTS] + REFERENCES:
        values = [results[s].get(key) for s in seeds]
        if any(v is None for v in values):
            continue
        mean = sum(values) / len(values)
        cells = [f"{v:.4f}" for v in values] + [f"{mean:.4f}", "" if key == "pipeline" else f"{mean - pipeline:+.4f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_doc(path: Path, results: dict[int, dict[str, float]], cfg: DemoConfig, minutes: float) -> Path:
    lines = ["# Ablation", "",
             "Written by `make ablation` (`python -m hpacam.ablation`); do not edit by hand. Each seed makes "
             f"its own synthetic sets ({cfg.n_train} training and {cfg.n_test} test images at {cfg.image_size} px) "
             f"and trains the demo's tiny models on CPU (Puzzle-CAM ResNet-10 at {cfg.cam_image_size} px for "
             f"{cfg.cam_epochs} epochs, regressor on {cfg.extract_images} training images, a one-layer Keras ViT). "
             "Each row changes one thing from the demo's pipeline; mAP is the competition metric (mask IoU 0.6) "
             "against the synthetic truth of the test set.", "", *format_table(results), "",
             f"Machine: {platform.machine()} {platform.system()}, CPU only; this run took {minutes:.0f} min "
             "(demos already in the ablation folder are reused).", "",
             "How to read it: `broadcast` gives every cell of an image the image's probabilities; "
             "`cell-oracle` keeps those probabilities but ranks the cells of each image perfectly, so it bounds "
             "what any cell stage that only reorders cells within images can add. The pipeline can pass it "
             "only by also re-ranking images (its regressor sees each cell's own evidence).", ""]
    return atomic_write_text(path, "\n".join(lines))


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
        results[seed], cfg = ablate(demo), demo.cfg
        atomic_write_text(demo.out / "ablation" / "results.json", json.dumps(results[seed], indent=1))
    doc = write_doc(args.doc, results, cfg, (time.perf_counter() - start) / 60)
    print("\n".join(format_table(results)))
    print(f"ablation: done in {time.perf_counter() - start:.0f} s; table: {doc}")


if __name__ == "__main__":
    main()
