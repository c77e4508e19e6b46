"""Streaming data bigger than memory: peak memory and samples/s of `mltrain fit` reading
WebDataset tar shards, a token corpus and Parquet row groups, against the same data from an
image folder (streamed, and in memory as far as it fits).

Writes the data first (PNG images in tar shards, a uint16 token file, a Parquet table; each about
--gigabytes on disk), then trains one epoch (the token corpus: --token-steps steps) of a small
model on each, one process with 2 DataLoader workers and 1 training thread, while a watcher
samples the memory the whole process tree holds (the training process's anonymous memory and
what each worker has written of its own; not the page cache of memory-mapped files) every 50 ms. Prints the peak, the data's size on disk and samples/s as the run reports
them (its training time, validation excluded).

    python benchmarks/streaming.py                    # about 2 GB of each, a few minutes per source
    python benchmarks/streaming.py --gigabytes 0.2    # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

IMAGE_SIDE = 64
PER_SHARD = 2_000


def write_shards(directory: Path, gigabytes: float, folder_images: int) -> tuple[str, int, int]:
    """Tar shards of noisy PNGs (two classes) of about `gigabytes`, and the first `folder_images`
    of them again as an image folder. Returns the brace pattern, the image count and the bytes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (directory / "shards").mkdir(parents=True, exist_ok=True)
    written, count, shard = 0, 0, 0
    while written < gigabytes * 1e9:
        path = directory / "shards" / f"train-{shard:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for _ in range(PER_SHARD):
                label = int(rng.integers(0, 2))
                pixels = np.clip((70, 170)[label] + rng.normal(0, 50, (IMAGE_SIDE, IMAGE_SIDE, 3)), 0, 255)
                encoded = io.BytesIO()
                Image.fromarray(pixels.astype(np.uint8)).save(encoded, format="PNG", compress_level=1)
                if count < folder_images:
                    target = directory / "folder" / ("dark", "light")[label] / f"{count}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(encoded.getvalue())
                for extension, content in (("png", encoded.getvalue()), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{count:09d}.{extension}")
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
                count += 1
        written += path.stat().st_size
        shard += 1
    return shard_pattern(directory, shard), count, written


def shard_pattern(directory: Path, shards: int) -> str:
    return str(directory / "shards" / f"train-{{000000..{shards - 1:06d}}}.tar")


def write_tokens(directory: Path, gigabytes: float) -> int:
    """A uint16 token file of about `gigabytes` (a learnable sequence), with its tokenizer.json."""
    folder = directory / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    tokens = int(gigabytes * 1e9 / 2)
    out = np.memmap(folder / "train.bin", dtype=np.uint16, mode="w+", shape=(tokens,))
    rng = np.random.default_rng(0)
    for start in range(0, tokens, 50_000_000):
        chunk = min(50_000_000, tokens - start)
        out[start:start + chunk] = np.cumsum(np.where(rng.random(chunk) < 0.9, 1, 7)) % 512
    out.flush()
    (folder / "val.bin").write_bytes(np.asarray(out[:100_000]).tobytes())
    vocabulary = {f"t{i}": i for i in range(512)}
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": vocabulary}}))
    return tokens * 2


def write_table(directory: Path, gigabytes: float) -> tuple[Path, int, int]:
    """A Parquet table of 32 float32 features and a class target, in row groups of 100,000 rows."""
    import pyarrow as pa
    import pyarrow.parquet as parquet

    path, rows_per_group = directory / "table.parquet", 100_000
    groups = max(1, int(gigabytes * 1e9 / (rows_per_group * 33 * 4)))
    rng = np.random.default_rng(0)
    with parquet.ParquetWriter(path, pa.schema([*(pa.field(f"f{i}", pa.float32()) for i in range(32)),
                                                 pa.field("label", pa.int64())]), compression="none") as writer:
        for _ in range(groups):
            features = rng.normal(size=(rows_per_group, 32)).astype(np.float32)
            label = (features[:, 0] + features[:, 1] > 0).astype(np.int64)
            writer.write_table(pa.table({**{f"f{i}": features[:, i] for i in range(32)}, "label": label}))
    return path, groups * rows_per_group, path.stat().st_size


def tree_memory(pid: int) -> int:
    """Bytes of memory a training process and its DataLoader workers hold: the process's
    anonymous memory and what each worker has written of its own (the pages a forked worker
    shares with the training process are counted once). File pages of memory-mapped data are
    left out: they are the kernel's page cache, dropped whenever memory is short."""
    total, pending = 0, [(pid, "Anonymous:")]
    while pending:
        current, field = pending.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text().splitlines()
            total += sum(int(line.split()[1]) for line in rollup if line.startswith(field)) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [(int(child), "Private_Dirty:") for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def fit(directory: Path, name: str, data: dict, model: dict, train: dict) -> dict:
    config = directory / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "seed": 0, "data": data, "model": model, "optimizer": {"name": "adam", "lr": 1e-3},
        "train": {"threads": 1, "preflight": False, "log_every_steps": 100, **train},
        "output": {"dir": str(directory / "runs")}}))
    run = directory / "runs" / name
    process = subprocess.Popen([str(Path(sys.executable).with_name("mltrain")), "fit", str(config), "--run-dir",
                                str(run), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def watch() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_memory(process.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    _, stderr = process.communicate()
    watcher.join()
    if process.returncode:
        raise SystemExit(f"{name} failed: {stderr}")
    summary = json.loads((run / "summary.json").read_text())
    return {"peak_mib": peak[0] / 2 ** 20, "samples_per_s": summary["train_samples_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size on disk of each source's data")
    parser.add_argument("--folder-images", type=int, default=20_000, help="images also written as a folder")
    parser.add_argument("--token-steps", type=int, default=2_000)
    parser.add_argument("--only", choices=["images", "tokens", "table"], action="append")
    parser.add_argument("--keep", type=Path, help="write the data here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    chosen = args.only or ["images", "tokens", "table"]
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        rows = []
        small_cnn = {"arch": "cnn", "channels": [8, 16], "readout": "avg"}
        if "images" in chosen:
            pattern, count, size = write_shards(directory, args.gigabytes, args.folder_images)
            in_folder = min(args.folder_images, count)
            image_keys = {"image_size": IMAGE_SIDE, "batch_size": 128, "workers": 2}
            folder = {"dataset": "image_folder", "root": str(directory / "folder"), **image_keys}
            for name, data, on_disk in (
                    ("webdataset, all shards", {"dataset": "webdataset", "train": pattern, "val_split": 0,
                                                **image_keys}, f"{size / 1e9:.2f} GB, {count:,} images"),
                    ("webdataset, folder's images", {"dataset": "webdataset", "val_split": 0, **image_keys,
                                                     "train": shard_pattern(directory, -(-in_folder // PER_SHARD))},
                     f"{in_folder:,} images"),
                    ("image folder, streamed", {**folder, "max_memory_mb": 0, "val_split": 0}, f"{in_folder:,} images"),
                    ("image folder, in memory", {**folder, "val_split": 0}, f"{in_folder:,} images")):
                rows.append((name, on_disk, fit(directory, name.replace(" ", "_").replace(",", "").replace("'", ""),
                                                 data, small_cnn, {"epochs": 1})))
        if "tokens" in chosen:
            size = write_tokens(directory, args.gigabytes)
            data = {"dataset": "tokens", "path": str(directory / "corpus"), "block_size": 128, "batch_size": 32,
                    "windows": args.token_steps * 32, "val_windows": 50}
            gpt = {"arch": "gpt", "d_model": 64, "heads": 2, "layers": 2}
            rows.append(("tokens", f"{size / 1e9:.2f} GB, {size // 2:,} tokens",
                         fit(directory, "tokens", data, gpt, {"epochs": 1})))
        if "table" in chosen:
            path, count, size = write_table(directory, args.gigabytes)
            data = {"dataset": "parquet", "path": str(path), "target": "label", "streaming": True,
                    "batch_size": 512, "workers": 2, "val_split": 0.01, "test_split": 0.01}
            rows.append(("parquet, streamed", f"{size / 1e9:.2f} GB, {count:,} rows",
                         fit(directory, "parquet", data, {"arch": "mlp", "hidden": [64]}, {"epochs": 1})))
    print(f"{'source':32} {'data on disk':32} {'peak memory (MiB)':>18} {'samples/s':>10}")
    for name, on_disk, result in rows:
        print(f"{name:32} {on_disk:32} {result['peak_mib']:18,.0f} {result['samples_per_s']:10,.0f}")


if __name__ == "__main__":
    main()
