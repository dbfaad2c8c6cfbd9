"""Report rows that are variants of one inference config, scored against a set's truth in one pass.

    python -m hpacam.variants --config inference.yaml --images PRIVATE/images \
        --sample PRIVATE/sample_submission.csv --truth PRIVATE/truth.csv --json rows.json \
        --variant pipeline_without_cell_model blend.cell_model_share=0 cell_models=[] \
        --variant pipeline_true_image_labels oracle_image_labels=PRIVATE/labels.csv

Each variant is the config with its overrides. Variants that differ only in `blend.*` or
`oracle_image_labels` share one pass of the models (the evidence); others (`cells_dir`,
`cell_models`, ...) get their own. Each is scored with the exact metric of `hpacam.tuning`
(equal to scoring the submission inference would write: tests/test_tuning.py). Nothing is chosen
here: this reports fixed settings, so it may be run on the set a result is reported on.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

from hpacam.config import load_config, to_dict
from hpacam.inference import InferenceConfig, combine, load_models, oracle_labels, read_sample, with_oracle_labels
from hpacam.submission import read_submission
from hpacam.tuning import SetScorer, collect_evidence

log = logging.getLogger(__name__)


def evidence_key(cfg: InferenceConfig) -> str:
    """What the models' pass depends on: everything but the blend and the oracle's image labels."""
    settings = to_dict(cfg)
    settings.pop("blend")
    settings.pop("oracle_image_labels")
    return json.dumps(settings, sort_keys=True, default=str)


def score_variants(configs: dict[str, InferenceConfig], images: Path, sample_path: Path,
                   truth_path: Path) -> dict[str, float]:
    """{variant: mAP} of each config on the set, one model pass per distinct evidence key."""
    sample, truth = read_sample(sample_path), read_submission(truth_path)
    groups: dict[str, list[str]] = {}
    for name, cfg in configs.items():
        groups.setdefault(evidence_key(cfg), []).append(name)
    scores = {}
    for names in groups.values():
        first = configs[names[0]]
        evidence = collect_evidence(first, images, sample, load_models(first))
        scorer = SetScorer(truth, evidence, truth_name=str(truth_path))
        for name in names:
            cfg = configs[name]
            labels = oracle_labels(cfg, sample["ID"])
            finals = []
            for item in evidence:
                item_blend = (item, cfg.blend) if not labels else with_oracle_labels(item, cfg.blend, labels[item.image_id])
                finals.append(combine(*item_blend)[1])
            scores[name] = scorer.score(finals, cfg.blend.min_confidence)
            log.info("%s: mAP %.4f", name, scores[name])
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    from hpacam.fileio import atomic_write_text
    from hpacam.runs import setup_logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the inference config the variants change")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True, help="the set's per-cell truth (submission format)")
    parser.add_argument("--json", type=Path, required=True, help="where {variant: mAP} is written")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar=("NAME", "OVERRIDE"),
                        help="a name, then key=value overrides of the config")
    args = parser.parse_args(argv)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    setup_logging(args.json.with_suffix(".log.txt"))
    try:
        configs = {name: load_config(InferenceConfig, args.config, overrides) for name, *overrides in args.variant}
        scores = score_variants(configs, args.images, args.sample, args.truth)
    except (ValueError, OSError) as exc:
        parser.exit(1, f"variants: error: {exc}\n")
    atomic_write_text(args.json, json.dumps(scores, indent=1))
    print("\n".join(f"{name}: mAP {score:.6f}" for name, score in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
