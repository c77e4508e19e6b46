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
    sidecar = json.loads((tmp_path / "churn.json").read_text())
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


def test_empty_cells_are_listed_at_once_and_ids_get_a_warning(tmp_path):
    rows = customers(120, seed=2)
    write_csv(tmp_path / "customers.csv", rows)
    empty = sum(row[name] is None for row in rows for name in ("age", "income", "plan"))
    config = table_config(tmp_path, "strict", "csv", tmp_path / "customers.csv", missing="error")
    done = subprocess.run([MLTRAIN, "fit", str(config)], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"{empty} empty feature cells" in done.stderr and "and " in done.stderr and "data.missing: fill" in done.stderr
    config = table_config(tmp_path, "with_id", "csv", tmp_path / "customers.csv", id_column=None,
                          features=["customer_id", "age", "income", "plan", "tenure_months"])
    done = subprocess.run([MLTRAIN, "fit", str(config), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "data.features 'customer_id' has a different value in every training row" in done.stderr
    assert "set data.id_column: customer_id" in done.stderr


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
