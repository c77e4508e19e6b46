"""Real tables: a customer table with empty cells and an ID column, from CSV and from Parquet,
through training, predict and an ONNX export whose sidecar encodes raw rows."""

import csv
import json
import subprocess

import numpy as np
import pytest
import torch

import mltrain
from conftest import MLTRAIN, write_config
from mltrain.export import export

pa = pytest.importorskip("pyarrow")
parquet = pytest.importorskip("pyarrow.parquet")

COLUMNS = ("customer_id", "age", "income", "plan", "region", "tenure_months", "churn")
PLANS, REGIONS = ("basic", "plus", "pro"), ("north", "south", "east", "west")


def customers(rows: int, seed: int = 0, empty: float = 0.08, first_id: int = 1) -> list[dict]:
    """Customers whose churn depends on tenure, plan and income; about `empty` of the age, income
    and plan cells empty (None)."""
    rng = np.random.default_rng(seed)
    table = []
    for index in range(rows):
        tenure, plan = int(rng.integers(1, 72)), PLANS[int(rng.integers(0, 3))]
        income = round(float(rng.normal(52_000, 15_000)), 2)
        risk = 1.5 - tenure / 24 + (0.8 if plan == "basic" else -0.4) - (income - 52_000) / 30_000
        row = {"customer_id": f"C{first_id + index:05d}", "age": int(rng.integers(18, 80)), "income": income,
               "plan": plan, "region": REGIONS[int(rng.integers(0, 4))], "tenure_months": tenure,
               "churn": "yes" if risk + rng.normal(0, 0.5) > 0 else "no"}
        for column in ("age", "income", "plan"):
            if rng.random() < empty:
                row[column] = None
        table.append(row)
    return table


def write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([["" if row[name] is None else row[name] for name in columns] for row in rows])


def write_parquet(path, rows, columns=COLUMNS):
    parquet.write_table(pa.table({name: [row[name] for row in rows] for name in columns}), path)


def table_config(directory, name, dataset, path, **data):
    return write_config(directory, name, replace=True, data={
        "dataset": dataset, "path": str(path), "target": "churn", "id_column": "customer_id", "missing": "fill",
        "batch_size": 32, **data}, model={"arch": "mlp", "hidden": [16]}, optimizer={"name": "adam", "lr": 0.01},
        train={"epochs": 3})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The same 300 customers as CSV and as Parquet, each trained with data.missing: fill."""
    directory = tmp_path_factory.mktemp("customers")
    rows = customers(300)
    write_csv(directory / "customers.csv", rows)
    write_parquet(directory / "customers.parquet", rows)
    runs = {dataset: mltrain.fit(table_config(directory, dataset, dataset, directory / f"customers.{dataset}")).run_dir
            for dataset in ("csv", "parquet")}
    return directory, runs


def test_csv_and_parquet_train_alike_filling_empty_cells(trained):
    _, runs = trained
    checkpoints = {dataset: torch.load(run / "checkpoints/last.pt", weights_only=True) for dataset, run in runs.items()}
    csv_model, parquet_model = checkpoints["csv"]["model"], checkpoints["parquet"]["model"]
    assert all(torch.equal(csv_model[name], parquet_model[name]) for name in csv_model)
    assert checkpoints["csv"]["data_state"] == checkpoints["parquet"]["data_state"]
    encoding = {entry["name"]: entry for entry in checkpoints["csv"]["data_state"]["columns"]}
    assert set(encoding) == {"age", "income", "plan", "region", "tenure_months"}  # the ID is no feature
    assert encoding["age"]["indicator"] and not encoding["tenure_months"]["indicator"]
    assert encoding["income"]["fill"] == pytest.approx(np.median([row["income"] for row in customers(300)
                                                                  if row["income"] is not None]), rel=0.05)
    assert "missing" in encoding["plan"]["categories"] and "missing" not in encoding["region"]["categories"]
    summary = json.loads((runs["csv"] / "summary.json").read_text())
    assert summary["final"]["val/accuracy"] > 0.7


def test_predict_carries_the_id_through_rows_with_empty_cells(trained, tmp_path):
    _, runs = trained
    new = customers(12, seed=5, empty=0.3, first_id=90_001)
    write_csv(tmp_path / "new.csv", new, COLUMNS[:-1])  # no target column
    write_parquet(tmp_path / "new.parquet", new, COLUMNS[:-1])
    from_csv = mltrain.predict(runs["parquet"], [tmp_path / "new.csv"])
    from_parquet = mltrain.predict(runs["csv"], [tmp_path / "new.parquet"])
    assert [row["id"] for row in from_csv] == [row["customer_id"] for row in new] == [row["id"] for row in from_parquet]
    assert [row["probabilities"][0] for row in from_csv] == pytest.approx(
        [row["probabilities"][0] for row in from_parquet])
    assert from_csv[0]["input"] == f"{tmp_path / 'new.csv'}:2" and from_parquet[0]["input"].endswith("new.parquet row 1")
    done = subprocess.run([MLTRAIN, "predict", str(runs["csv"]), str(tmp_path / "new.csv"), "--output",
                           str(tmp_path / "out.csv")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.csv").read_text().splitlines()[0].startswith("input,id,class_1,probability_1")


def encode_with_sidecar(rows: list[dict], sidecar: dict) -> np.ndarray:
    """Raw rows to model inputs, from the export's sidecar alone, as an onnxruntime user would."""
    columns = []
    for entry in sidecar["data_state"]["columns"]:
        values = [row[entry["name"]] for row in rows]
        if "categories" in entry:
            values = [entry["fill"] if value is None and "fill" in entry else value for value in values]
            columns += [[float(value == category) for value in values] for category in entry["categories"]]
        else:
            columns.append([((entry["fill"] if value is None else value) - entry["mean"]) / entry["std"]
                            for value in values])
            if entry.get("indicator"):
                columns.append([float(value is None) for value in values])
    assert len(columns) == len(sidecar["data_state"]["feature_names"])
    return np.array(columns, dtype=np.float32).T


def test_the_onnx_export_and_its_sidecar_predict_raw_rows_as_predict_does(trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    _, runs = trained
    exported = export(runs["csv"], "onnx", tmp_path / "churn.onnx")
    sidecar = json.loads((tmp_path / "churn.onnx.json").read_text())
    metadata = {prop.key: prop.value for prop in onnx.load(str(exported.path)).metadata_props}
    assert json.loads(metadata["class_names"]) == ["no", "yes"] == sidecar["spec"]["class_names"]
    new = customers(20, seed=9, empty=0.3)
    write_csv(tmp_path / "new.csv", new, COLUMNS[:-1])
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: encode_with_sidecar(new, sidecar)})[0]
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    predicted = mltrain.predict(runs["csv"], [tmp_path / "new.csv"], top_k=2)
    for row, expected in zip(predicted, probabilities):
        by_class = dict(zip(row["classes"], row["probabilities"]))
        assert [by_class["no"], by_class["yes"]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_empty_cells_are_listed_at_once_and_ids_get_a_warning(tmp_path, capsys):
    rows = customers(120, seed=2)
    write_csv(tmp_path / "customers.csv", rows)
    empty = sum(row[name] is None for row in rows for name in ("age", "income", "plan"))
    config = table_config(tmp_path, "strict", "csv", tmp_path / "customers.csv", missing="error")
    done = subprocess.run([MLTRAIN, "fit", str(config)], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"{empty} empty feature cells" in done.stderr and "and " in done.stderr and "data.missing: fill" in done.stderr
    config = table_config(tmp_path, "with_id", "csv", tmp_path / "customers.csv", id_column=None,
                          features=["customer_id", "age", "income", "plan", "tenure_months"])
    mltrain.fit(config)
    warned = capsys.readouterr().err
    assert "data.features 'customer_id' has a different value in every training row" in warned
    assert "set data.id_column: customer_id" in warned


def test_a_folder_of_parquet_files_is_one_table(tmp_path):
    rows = customers(90, seed=3)
    (tmp_path / "shards").mkdir()
    for part in range(3):
        write_parquet(tmp_path / "shards" / f"part-{part}.parquet", rows[part * 30:(part + 1) * 30])
    result = mltrain.fit(table_config(tmp_path, "folder", "parquet", tmp_path / "shards", test_split=0.0))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    state = torch.load(result.run_dir / "checkpoints/last.pt", weights_only=True)["data_state"]
    assert state["class_names"] == ["no", "yes"]


def test_csv_and_parquet_type_each_column_alike(tmp_path):
    """Booleans, numbers written as text and codes with leading zeros: the same column kinds and
    values from either format."""
    from mltrain.data.table_files import read_table

    rows = [{"flag": True, "count": "3", "zip": "02139", "score": 1.5},
            {"flag": False, "count": "", "zip": "M5V", "score": None},
            {"flag": True, "count": "12", "zip": "10001", "score": 2.0}]
    columns = ("flag", "count", "zip", "score")
    write_csv(tmp_path / "t.csv", rows, columns)
    parquet.write_table(pa.table({"flag": [row["flag"] for row in rows],
                                  "count": [row["count"] or None for row in rows],
                                  "zip": [row["zip"] for row in rows], "score": [row["score"] for row in rows]}),
                        tmp_path / "t.parquet")
    from_csv = read_table(tmp_path / "t.csv", "csv")
    from_parquet = read_table(tmp_path / "t.parquet", "parquet")
    for name in columns:
        a, b = from_csv.columns[name], from_parquet.columns[name]
        assert a.numeric == b.numeric, name
        assert a.texts().tolist() == b.texts().tolist(), name
    assert from_csv.columns["count"].numeric and not from_csv.columns["zip"].numeric
    assert from_csv.columns["flag"].texts().tolist() == ["True", "False", "True"]


def test_predict_reads_categories_and_ids_as_the_file_writes_them(tmp_path):
    rows = [{"id": f"{index:05d}", "zip": ["02139", "10001", "M5V"][index % 3], "size": index % 7,
             "label": ["a", "b"][index % 2]} for index in range(60)]
    write_csv(tmp_path / "train.csv", rows, ("id", "zip", "size", "label"))
    config = write_config(tmp_path, "zips", replace=True, data={
        "dataset": "csv", "path": "train.csv", "target": "label", "id_column": "id"}, train={"epochs": 1})
    run = mltrain.fit(config).run_dir
    new = [{"id": "00123", "zip": "02139", "size": 3}, {"id": "00456", "zip": "10001", "size": 1}]
    write_csv(tmp_path / "new.csv", new, ("id", "zip", "size"))  # only zips that look like numbers
    predicted = mltrain.predict(run, [tmp_path / "new.csv"])
    assert [row["id"] for row in predicted] == ["00123", "00456"]


def test_an_encoding_from_before_data_missing_still_reads_empty_cells():
    """Checkpoints from before data.missing kept an empty text cell as the category "", and class
    names of numbers as written ("1.0"): both still encode."""
    from pathlib import Path

    from mltrain.data.table_encoding import encode
    from mltrain.data.table_files import Column, Table, cell_column
    from mltrain.data.tabular import targets_of

    table = Table(Path("new.csv"), ["plan", "label"], {
        "plan": Column.of_texts(np.array(["basic", "", "pro"], dtype=object)),
        "label": cell_column(np.array(["1", "0", "1"], dtype=object))}, np.array([2, 3, 4]))
    encoded = encode(table, [{"name": "plan", "categories": ["", "basic", "pro"]}], new_rows=True)
    assert encoded.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    ids, names = targets_of(table, "label", "classification", False, ["0.0", "1.0"])
    assert ids.tolist() == [1, 0, 1] and names == ["0.0", "1.0"]
