"""Files the tests write: configs, CSV tables, image folders and user packages."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import yaml

TINY = {
    "seed": 0,
    "data": {"dataset": "spirals", "batch_size": 32, "points": 100},
    "model": {"arch": "mlp", "hidden": [32, 32]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 3},
}
COLOURS = ("red", "green", "blue")


def write_config(directory: Path, name: str = "tiny", base: dict = TINY, replace: bool = False, **sections) -> Path:
    """directory/<name>.yaml: `base` (by default a small, fast config: spirals and a small MLP) with its output in
    directory/runs and each section given here merged into base's, or put in its place if it is not a dict or
    `replace` is set."""
    config = {**copy.deepcopy(base), "output": {"dir": str(directory / "runs")}}
    for section, values in sections.items():
        if isinstance(values, dict) and not replace:
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_table(path: Path, rows: int = 60, recipe: str = "sizes", bad_row: int | None = None) -> list[str]:
    """A CSV of a header and `rows` rows drawn from seed 0, colour red, green, blue in turn; returns its lines.

    "sizes": size ~ N(10, 3), colour, weight = 2 * size + N(0, 1) ('nan' in row bad_row), kind big if size > 10
    else small. "colours": size ~ N(0, 1), colour, kind big if size + (colour is red) > 0.3 else small.
    "animals": size, colour, weight, both ~ N(0, 1), kind cat where "colours" says big, else dog or fox by
    weight's sign.
    """
    rng = np.random.default_rng(0)
    lines = ["size,colour,kind" if recipe == "colours" else "size,colour,weight,kind"]
    for i in range(rows):
        colour = COLOURS[i % 3]
        if recipe == "sizes":
            size = rng.normal(10, 3)
            weight = "nan" if i == bad_row else f"{size * 2 + rng.normal():.3f}"
            lines.append(f"{size:.3f},{colour},{weight},{'big' if size > 10 else 'small'}")
        elif recipe == "colours":
            size = rng.normal()
            lines.append(f"{size:.3f},{colour},{'big' if size + (colour == 'red') > 0.3 else 'small'}")
        else:
            size, weight = rng.normal(), rng.normal()
            kind = "cat" if size + (colour == "red") > 0.3 else "dog" if weight > 0 else "fox"
            lines.append(f"{size:.3f},{colour},{weight:.3f},{kind}")
    path.write_text("\n".join(lines) + "\n")
    return lines


def write_images(folder: Path, count: int, channels: int = 3, size: int | tuple[int, int] = 12,
                 suffix: str = ".png", shade: int = 0, seed: int | None = None) -> None:
    """Images 0<suffix>, 1<suffix>, ... with `channels` channels, `size` (height, width) or square.

    Without a seed: `count` in folder, filled with `shade`, image i with its first i + 1 columns white and
    i % 3 rows taller (sizes differ: all get resized). With a seed: `count` each in folder/dark and
    folder/light, pixels drawn from the seed within 40 of 50 and of 180 (two learnable classes).
    """
    import torch
    from PIL import Image
    from torchvision.io import encode_jpeg, write_png

    height, width = (size, size) if isinstance(size, int) else size
    rng = None if seed is None else np.random.default_rng(seed)
    shades = {folder: shade} if rng is None else {folder / "dark": 50, folder / "light": 180}
    for target, fill in shades.items():
        target.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = target / f"{i}{suffix}"
            if rng is not None:
                pixels = np.clip(fill + rng.integers(-40, 40, (height, width, channels)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path)
                continue
            image = torch.full((channels, height + i % 3, width), fill, dtype=torch.uint8)
            image[:, :, : i + 1] = 255
            if suffix == ".png":
                write_png(image, str(path))
            else:
                path.write_bytes(encode_jpeg(image).numpy().tobytes())


def write_package(site: Path, name: str, modules: dict[str, str], plugin: str | None = None,
                  entry_points: dict[str, dict[str, str]] | None = None) -> Path:
    """site/<name>/: an empty __init__.py and <module>.py holding each source in `modules`; with a plugin name,
    also site/<plugin>-0.1.dist-info, a distribution declaring `entry_points` ({group: {name: target}}).
    Returns site, the folder to put on the import path."""
    package = site / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(source)
    if plugin:
        dist_info = site / f"{plugin}-0.1.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {plugin}\nVersion: 0.1\n")
        (dist_info / "entry_points.txt").write_text("\n".join(
            f"[{group}]\n" + "".join(f"{key} = {target}\n" for key, target in points.items())
            for group, points in (entry_points or {}).items()))
    return site
