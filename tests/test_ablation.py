"""The ablation table: one column per seed, their mean and its difference from the pipeline's mean,
the same difference on public; rows only where every seed has a score (tools/ablation.py, imported
from tools/ as conftest.py arranges)."""

from ablation import VARIANTS, format_table, write_doc
from demo import DemoConfig


def rows_of(lines: list[str]) -> dict[str, list[str]]:
    cells = [[cell.strip() for cell in line.strip()[1:-1].split("|")] for line in lines[2:]]
    return {row[0]: row[1:] for row in cells}


def test_table_has_a_column_per_seed_their_mean_and_the_change_from_the_pipeline():
    results = {0: {"private": {"pipeline": 0.6, "other_cam": 0.5}, "public": {"pipeline": 0.7, "other_cam": 0.6}},
               1: {"private": {"pipeline": 0.4, "other_cam": 0.35, "no_regressor": 0.2},
                   "public": {"pipeline": 0.5, "other_cam": 0.5}}}
    lines = format_table(results)
    assert lines[0] == ("| variant (private mAP) | seed 0 | seed 1 | mean | mean - pipeline "
                        "| public: mean - pipeline |")
    rows = rows_of(lines)
    assert rows[VARIANTS[0].label] == ["0.6000", "0.4000", "0.5000", "", ""]
    assert rows[VARIANTS[1].label] == ["0.5000", "0.3500", "0.4250", "-0.0750", "-0.0500"]
    assert len(rows) == 2  # no_regressor is missing for seed 0, so it has no row


def test_single_seed_table_and_the_doc_is_written(tmp_path):
    results = {3: {"private": {"pipeline": 0.25, "no_regressor": 0.3}, "public": {"pipeline": 0.5}}}
    lines = format_table(results)
    assert lines[0] == "| variant (private mAP) | seed 3 | mean | mean - pipeline | public: mean - pipeline |"
    assert lines[3].endswith("| 0.3000 | 0.3000 | +0.0500 |  |")  # no public score: a fixed, untuned row
    doc = write_doc(tmp_path / "ablation.md", results, DemoConfig(), 12.0)
    text = doc.read_text()
    assert "| 0.2500 |" in text and "12 min" in text and "480 training, 128 public and 128 private" in text


def test_every_variant_changes_one_thing_and_the_oracle_is_named():
    keys = [v.key for v in VARIANTS]
    assert keys[0] == "pipeline" and len(set(keys)) == len(keys)
    oracles = [v for v in VARIANTS if v.regressor == "oracle"]
    assert len(oracles) == 1 and oracles[0].label.startswith("ORACLE")


def test_a_demo_folder_is_reused_only_when_made_with_todays_settings(tmp_path):
    import json
    from dataclasses import asdict

    from ablation import reusable_demo
    from demo import METHOD

    folder = tmp_path / "seed4"
    folder.mkdir()
    assert reusable_demo(folder, 4) is None  # nothing there
    current = asdict(DemoConfig(seed=4))
    older = {key: value for key, value in current.items() if key != "cell_recipe"}  # made before a stage existed
    (folder / "metrics.json").write_text(json.dumps({"config": older, "mAP": {"pipeline": 0.5}, "public": {}}))
    assert reusable_demo(folder, 4) is None
    assert reusable_demo(folder, 5) is None
    (folder / "metrics.json").write_text(json.dumps({"config": current, "mAP": {"pipeline": 0.5}, "public": {}}))
    assert reusable_demo(folder, 4) is None  # today's settings, but figures of an older method (tuner, blend)
    (folder / "metrics.json").write_text(json.dumps({"config": current, "method": METHOD, "mAP": {"pipeline": 0.5},
                                                     "public": {}}))
    assert reusable_demo(folder, 4).metrics["private"] == {"pipeline": 0.5}
    assert reusable_demo(folder, 5) is None  # another seed's demo


def test_a_seeds_saved_variant_rows_are_reused_only_when_made_by_todays_method(tmp_path):
    import json

    from ablation import saved_variants
    from demo import METHOD, Demo

    demo = Demo(out=tmp_path, cfg=DemoConfig(seed=3))
    nothing = {"private": {}, "public": {}}
    assert saved_variants(demo) == nothing  # nothing there
    (tmp_path / "ablation").mkdir()
    rows = {v.key: 0.5 for v in VARIANTS[:3]}
    path = tmp_path / "ablation" / "results.json"
    path.write_text(json.dumps({"private": rows, "public": {}}))
    assert saved_variants(demo) == nothing  # no method recorded: an older run
    path.write_text(json.dumps({"method": "tuner-0", "private": rows, "public": {}}))
    assert saved_variants(demo) == nothing  # another method's figures
    path.write_text(json.dumps({"method": METHOD, "private": rows, "public": {"pipeline": 0.6}}))
    assert saved_variants(demo) == {"private": rows, "public": {"pipeline": 0.6}}  # a part: the rest is run


def test_the_demo_method_names_the_segmentation_code_so_a_new_segmenter_reruns_the_demos():
    from demo import METHOD

    from hpacam.segmentation import CODE_VERSION

    assert METHOD.endswith(f"+{CODE_VERSION}")

