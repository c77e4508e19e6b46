"""Load time and peak memory of a large table through each table source, against pandas.

Writes a ROWS x COLUMNS table (40 numeric columns, 9 text columns, a class target) as Parquet and
as CSV, then in a fresh process each: reads and encodes it as `mltrain fit` would (the `parquet`,
`hf` and `csv` sources' builders, everything up to training), or reads it with
`pandas.read_parquet` (the floor: a read with no encoding). Prints seconds and peak RSS (the
process's maximum resident memory, from getrusage), median of --repeats; the `imports` row is
what an mltrain process holds before it reads a row (torch, pyarrow and the sources).

    python benchmarks/table_load.py                       # 1,000,000 rows, 50 columns
    python benchmarks/table_load.py --rows 100000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
started = time.perf_counter()
if kind == "pandas":
    import pandas
    rows = len(pandas.read_parquet(path))
elif kind == "imports":  # what every mltrain source pays before reading a row: torch and the sources
    from mltrain.registry import DATASETS
    import pyarrow.parquet
    DATASETS["parquet"]
    rows = 0
else:
    from mltrain.registry import DATASETS
    keys = {"val_split": 0.1, "seed": 0, "target": "target", "test_split": 0.1, "missing": "error"}
    if kind == "hf":
        data = DATASETS["hf"].factory(path="parquet", data_files=path, input=tuple(f"c{i}" for i in range(49)),
                                      task="classification", image_size=32, normalize="auto", **keys)
    else:
        data = DATASETS[kind].factory(path=path, features=None, task="classification", id_column=None, **keys)
    rows = sum(data.size(split) for split in data.splits)
seconds = time.perf_counter() - started
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_mib}))
"""


def write_table(directory: Path, rows: int, columns: int) -> tuple[Path, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    rng = np.random.default_rng(0)
    numeric, text = columns - 1 - (columns - 1) // 5, (columns - 1) // 5
    data = {f"c{i}": rng.normal(size=rows).round(4) for i in range(numeric)}
    words = np.array(["red", "green", "blue", "amber", "violet", "grey"])
    data.update({f"c{numeric + i}": words[rng.integers(0, len(words), rows)] for i in range(text)})
    data["target"] = rng.integers(0, 3, rows)
    table = pa.table(data)
    pyarrow.parquet.write_table(table, directory / "table.parquet")
    pyarrow.csv.write_csv(table, directory / "table.csv", pyarrow.csv.WriteOptions(quoting_style="none"))
    return directory / "table.parquet", directory / "table.csv"


def measure(kind: str, path: Path, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", CHILD, kind, str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{kind}: {done.stderr.strip().splitlines()[-1]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"rows": runs[0]["rows"], "seconds": statistics.median(run["seconds"] for run in runs),
            "peak_mib": statistics.median(run["peak_mib"] for run in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=50, help="columns in all, the target included")
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        parquet_file, csv_file = write_table(Path(scratch), arguments.rows, arguments.columns)
        sizes = {"parquet": parquet_file.stat().st_size, "csv": csv_file.stat().st_size}
        print(f"{arguments.rows:,} rows x {arguments.columns} columns; Parquet {sizes['parquet'] / 2**20:.0f} MiB, "
              f"CSV {sizes['csv'] / 2**20:.0f} MiB; median of {arguments.repeats}")
        print("| reader | seconds | peak RSS (MiB) | ratio to pandas |")
        print("| --- | --- | --- | --- |")
        floor = measure("pandas", parquet_file, arguments.repeats)
        for kind, path in (("pandas", parquet_file), ("imports", parquet_file), ("parquet", parquet_file),
                           ("hf", parquet_file), ("csv", csv_file)):
            result = floor if kind == "pandas" else measure(kind, path, arguments.repeats)
            print(f"| {kind} | {result['seconds']:.1f} | {result['peak_mib']:.0f} | "
                  f"{result['seconds'] / floor['seconds']:.1f}x |")


if __name__ == "__main__":
    main()
