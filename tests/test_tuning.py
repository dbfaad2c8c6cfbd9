"""Choosing the blend on a public set: the fast scorer is the metric, the grid holds broadcast.

A tiny CAM model (one epoch at 32 px) on six synthetic 128 px images: the numbers mean nothing
about quality, but every path (evidence, blends, scoring, the tuned config, the oracle switch)
runs for real.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpacam.config import load_config
from hpacam.evaluate import evaluate_frames
from hpacam.inference import (BlendConfig, InferenceConfig, cell_probabilities, combine, run_inference,
                              standing_within_image)
from hpacam.submission import cells_prediction_string, read_submission

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "cam" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """(inference config, the public set's folder, its evidence)."""
    from hpacam.cam.config import TrainCamConfig
    from hpacam.cam.train import train
    from hpacam.synth import generate_dataset
    from hpacam.tuning import collect_evidence

    root = tmp_path_factory.mktemp("tuning")
    generate_dataset(root / "train", 8, 128, seed=31, progress=False)
    generate_dataset(root / "public", 6, 128, seed=32, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(TrainCamConfig, RECIPE, [
            f"run_dir={root / 'cam'}", f"data.sources=[{{images: {root / 'train' / 'images'}, "
            f"labels: {root / 'train' / 'labels.csv'}}}]", "data.image_size=32", "data.fold=-1",
            "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}", "train.batch_size=4", "train.epochs=1",
            "train.progress=false"]))
    finally:
        torch.set_num_threads(threads)
    config = root / "inference.yaml"
    config.write_text(f"cam_models:\n  - checkpoint: {root / 'cam' / 'last.pt'}\n"
                      "tta:\n  scales: [1.0]\n  flips: false\nsegmentation:\n  cache:\n    enabled: false\n")
    cfg = load_config(InferenceConfig, config)
    sample = read_submission(root / "public" / "sample_submission.csv")
    return config, root / "public", collect_evidence(cfg, root / "public" / "images", sample)


def submission_of(evidence, blend: BlendConfig, sample: pd.DataFrame) -> pd.DataFrame:
    rows = {e.image_id: cells_prediction_string(e.masks, combine(e, blend)[1], blend.min_confidence) for e in evidence}
    return sample.assign(PredictionString=sample["ID"].map(rows))


@pytest.mark.parametrize("blend", [
    BlendConfig(floor=1.0),
    BlendConfig(floor=0.3, sigmoid_weight=0.0, regressor_weight=0.0, standing_weight=1.0),
    BlendConfig(floor=0.0, sigmoid_weight=1.0, regressor_weight=0.0),
    BlendConfig(mode="linear", image_level_weight=0.4, min_confidence=0.2),
])
def test_fast_scorer_equals_the_metric_on_the_written_submission(public, blend):
    from hpacam.tuning import SetScorer

    _, folder, evidence = public
    truth = read_submission(folder / "truth.csv")
    sample = read_submission(folder / "sample_submission.csv")
    expected = evaluate_frames(truth, submission_of(evidence, blend, sample)).mean_average_precision
    fast = SetScorer(truth, evidence).score([combine(e, blend)[1] for e in evidence], blend.min_confidence)
    assert fast == pytest.approx(expected, abs=1e-12)


def test_inference_writes_what_the_evidence_and_blend_give(public):
    config, folder, evidence = public
    cfg = load_config(InferenceConfig, config, ["blend.floor=0.5", "blend.standing_weight=1.0"])
    sample = read_submission(folder / "sample_submission.csv")
    submission, probs, sources = run_inference(cfg, folder / "images", sample)
    expected = submission_of(evidence, cfg.blend, sample)
    assert submission["PredictionString"].tolist() == expected["PredictionString"].tolist()
    assert set(sources["source"]) == {"cam_models", "blend"}
    np.testing.assert_allclose(sources.loc[sources["source"] == "blend", [str(c) for c in range(19)]].to_numpy(),
                               probs[[str(c) for c in range(19)]].to_numpy())


def test_the_grid_holds_broadcast_and_the_best_beats_or_equals_it(public):
    from hpacam.tuning import SetScorer, TuneGrid, choose_blend

    config, folder, evidence = public
    cfg = load_config(InferenceConfig, config)
    scorer = SetScorer(read_submission(folder / "truth.csv"), evidence)
    blend, table = choose_blend(cfg, evidence, scorer, TuneGrid(floors=[0.0, 0.5, 1.0]))
    broadcast = table.loc[table["candidate"] == "broadcast", "mAP"]
    assert len(broadcast) == 1  # floor 1 once: the cell source cannot matter there
    assert table["mAP"].max() >= broadcast.iloc[0]
    # no regressor in this config: only sources that need none are tried
    assert set(table["regressor_weight"]) == {0.0}
    assert scorer.score([combine(e, blend)[1] for e in evidence]) == pytest.approx(table["mAP"].max())


def test_tuning_cli_writes_a_config_that_inference_reads(public, tmp_path):
    from hpacam.tuning import main

    config, folder, _ = public
    out = tmp_path / "tuned.yaml"
    assert main(["--config", str(config), "--images", str(folder / "images"), "--sample",
                 str(folder / "sample_submission.csv"), "--truth", str(folder / "truth.csv"), "--out", str(out)]) == 0
    tuned = load_config(InferenceConfig, out)
    table = pd.read_csv(tmp_path / "tuned.csv")
    assert table["chosen"].sum() == 1 and table["mAP"].is_monotonic_decreasing  # sorted best first
    best = table[table["chosen"]].iloc[0]
    assert tuned.blend.floor == pytest.approx(best["floor"])
    assert tuned.blend.standing_weight == pytest.approx(best["standing_weight"])
    assert tuned.cam_models[0].checkpoint == load_config(InferenceConfig, config).cam_models[0].checkpoint


def test_tuning_refuses_a_truth_that_does_not_cover_the_set(public, tmp_path):
    from hpacam.tuning import SetScorer

    _, folder, evidence = public
    truth = read_submission(folder / "truth.csv").iloc[1:]
    with pytest.raises(ValueError, match="no truth for 1 images"):
        SetScorer(truth, evidence, truth_name="public/truth.csv")


def test_oracle_image_labels_replace_the_image_probabilities(public, tmp_path):
    from hpacam.labels import multi_hot, read_labels

    config, folder, _ = public
    sample = read_submission(folder / "sample_submission.csv")
    cfg = load_config(InferenceConfig, config, [f"oracle_image_labels={folder / 'labels.csv'}"])
    _, probs, sources = run_inference(cfg, folder / "images", sample)
    labels = read_labels(folder / "labels.csv")
    expected = dict(zip(labels["ID"], multi_hot(labels["labels"])))
    for _, row in probs.iterrows():
        np.testing.assert_array_equal(row[[str(c) for c in range(19)]].to_numpy(float), expected[row["ID"]])
    assert not sources.empty  # the models' own sources are still reported
    partial = tmp_path / "labels.csv"
    labels.iloc[1:].assign(Label=lambda f: f["labels"].map(lambda ls: "|".join(map(str, ls))))[["ID", "Label"]] \
        .to_csv(partial, index=False)
    with pytest.raises(ValueError, match="no labels for 1 sample IDs"):
        run_inference(replace(cfg, oracle_image_labels=partial), folder / "images", sample)


def test_standing_is_relative_to_the_image_best_cell_per_class():
    means = np.array([[0.0, 2.0, -0.1], [1.0, 4.0, -0.2], [0.5, 1.0, -0.3]])
    standing = standing_within_image(means)
    np.testing.assert_allclose(standing[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(standing[:, 1], [0.5, 1.0, 0.25])
    np.testing.assert_array_equal(standing[:, 2], 1.0)  # no positive evidence: nothing tells cells apart
    np.testing.assert_allclose(standing_within_image(means * [3.0, 0.1, 1.0]), standing)


def test_cell_probabilities_weigh_sources_and_fall_back_to_the_sigmoid(public):
    _, _, evidence = public
    item = next(e for e in evidence if e.n_cells)
    assert item.regressor is None
    seed_style = cell_probabilities(item, BlendConfig(sigmoid_weight=0.5, regressor_weight=0.5))
    np.testing.assert_allclose(seed_style, item.sigmoid)
    mixed = cell_probabilities(item, BlendConfig(sigmoid_weight=1.0, regressor_weight=0.0, standing_weight=1.0))
    np.testing.assert_allclose(mixed, (item.sigmoid + item.standing) / 2)


def test_the_tuners_submission_is_what_inference_writes_for_the_tuned_config(public, tmp_path):
    from hpacam.tuning import main

    config, folder, _ = public
    out, submission = tmp_path / "tuned.yaml", tmp_path / "set" / "submission.csv"
    assert main(["--config", str(config), "--images", str(folder / "images"), "--sample",
                 str(folder / "sample_submission.csv"), "--truth", str(folder / "truth.csv"), "--out", str(out),
                 "--submission", str(submission), "--floors", "0.5", "1.0"]) == 0
    sample = read_submission(folder / "sample_submission.csv")
    expected, probs, sources = run_inference(load_config(InferenceConfig, out), folder / "images", sample)
    assert read_submission(submission)["PredictionString"].tolist() == expected["PredictionString"].tolist()
    written = pd.read_csv(tmp_path / "set" / "submission.image_probs.csv")
    np.testing.assert_allclose(written[[str(c) for c in range(19)]].to_numpy(),
                               probs[[str(c) for c in range(19)]].to_numpy(), rtol=1e-5)
    assert set(pd.read_csv(tmp_path / "set" / "submission.image_sources.csv")["source"]) == set(sources["source"])


def test_variant_rows_equal_the_metric_on_the_submissions_inference_writes(public, tmp_path):
    from hpacam.variants import main

    config, folder, _ = public
    variants = {"blend": ["blend.floor=0.3", "blend.standing_weight=1.0"],
                "true_labels": [f"oracle_image_labels={folder / 'labels.csv'}", "blend.floor=0.5"],
                "truth_masks": [f"cells_dir={folder / 'cells'}"]}
    args = [a for name, overrides in variants.items() for a in ("--variant", name, *overrides)]
    json_path = tmp_path / "rows.json"
    assert main(["--config", str(config), "--images", str(folder / "images"), "--sample",
                 str(folder / "sample_submission.csv"), "--truth", str(folder / "truth.csv"), "--json",
                 str(json_path), *args]) == 0
    import json

    scores = json.loads(json_path.read_text())
    truth = read_submission(folder / "truth.csv")
    sample = read_submission(folder / "sample_submission.csv")
    for name, overrides in variants.items():
        submission, _, _ = run_inference(load_config(InferenceConfig, config, overrides), folder / "images", sample)
        assert scores[name] == pytest.approx(evaluate_frames(truth, submission).mean_average_precision, abs=1e-12), name
