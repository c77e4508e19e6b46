"""What `mltrain runs` lists: one row per run directory, read from its summary.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UserError


def collect_runs(directory: str | Path) -> list[dict[str, Any]]:
    """Every run directory directly under `directory`, oldest first by name (names carry the time)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory; runs are written to output.dir (default: runs)")
    rows = []
    for run in sorted(path for path in directory.iterdir() if (path / "config.yaml").is_file()):
        try:
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            summary = {}  # stopped before its first summary: still a run, shown as unknown
        rows.append({"run": run.name, "path": str(run), "status": summary.get("status", "unknown"),
                     "epochs": summary.get("epochs_completed"), "steps": summary.get("steps"),
                     "best": summary.get("best"), "test": summary.get("test", {}),
                     "duration_s": summary.get("duration_s"), "params": summary.get("params")})
    return rows
