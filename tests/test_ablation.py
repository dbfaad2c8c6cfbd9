"""The ablation table: one column per seed, a mean across seeds, rows only where every seed has a score."""

from hpacam.ablation import VARIANTS, format_table, write_doc
from hpacam.demo import DemoConfig


def test_table_has_a_column_per_seed_and_their_mean():
    results = {0: {"pipeline": 0.6, "plain_cam": 0.5}, 1: {"pipeline": 0.4, "plain_cam": 0.3, "relu": 0.2}}
    lines = format_table(results)
    assert lines[0] == "| variant | seed 0 | seed 1 | mean |"
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:]}
    assert rows[VARIANTS[0].label] == ["0.6000", "0.4000", "0.5000 |"]
    assert len(rows) == 2  # relu is missing for seed 0, so it has no row


def test_single_seed_table_has_no_mean_and_the_doc_is_written(tmp_path):
    lines = format_table({3: {"pipeline": 0.25}})
    assert lines[0] == "| variant | seed 3 |" and lines[2].endswith("| 0.2500 |")
    doc = write_doc(tmp_path / "ablation.md", {3: {"pipeline": 0.25}}, DemoConfig(), 12.0)
    text = doc.read_text()
    assert "| 0.2500 |" in text and "12 min" in text and "320 training" in text
