"""Property tests: any valid label table survives a write/read round trip in both CSV formats."""

import string

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacam.labels import format_labels, multi_hot, parse_labels, read_labels

ids = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
label_sets = st.sets(st.integers(0, 18), min_size=1, max_size=5).map(lambda s: tuple(sorted(s)))
tables = st.dictionaries(ids, label_sets, min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(table=tables, public=st.booleans())
def test_label_tables_round_trip(tmp_path_factory, table, public):
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    frame = pd.DataFrame({"ID": list(table), "Label": [format_labels(v) for v in table.values()]})
    if public:  # the public-HPA layout: index column, cell line, label list
        frame.insert(1, "Cellline", "U-2 OS")
        frame["Labels_list"] = [str(list(v)) for v in table.values()]
    frame.to_csv(path, index=public)
    read = read_labels(path)
    assert read["ID"].tolist() == list(table)
    assert read["labels"].tolist() == list(table.values())
    assert multi_hot(read["labels"]).sum() == sum(len(v) for v in table.values())


@given(labels=label_sets)
def test_parse_inverts_format_in_any_order(labels):
    assert parse_labels("|".join(str(x) for x in reversed(labels)), "x") == labels
