"""The files a report rests on, kept beside it: each reported training's small files in the runs layout
(``DIR/NAME/SCALE/CELL``), so that ``jitlab report NAME --runs DIR`` regenerates the report from them and a rerun
whose runs directory starts as a copy of them skips the trainings they finished. Checkpoints stay behind (tens of MB
each); the logged scalars come along, as the report's log-curve figures read them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from jitlab.atomic import atomic_path
from jitlab.experiments.report.collect import Collected
from jitlab.experiments.report.logs import version_dirs

# what `jitlab report` reads of a cell (result.json, the log events) and what names its settings (the rest)
KEPT = ("cell.json", "config.yaml", "eval-settings.json", "metrics.json", "result.json")


def keep_results(collected: Collected, dest: Path) -> list[Path]:
    """Copy every reported training with a result (done, diverged or failed) to ``dest``; returns the cell
    directories written. Each file is replaced atomically; a training already kept is brought up to date."""
    written = []
    for cell in collected.cells:
        if collected.results.get(cell.id) is None:
            continue
        source = collected.directory / cell.id
        target = Path(dest) / collected.spec.name / collected.scale / cell.id
        if target.resolve() == source.resolve():
            continue
        files = [source / name for name in KEPT if (source / name).is_file()]
        files += [event for version in version_dirs(source) for event in sorted(version.glob("events.out.*"))]
        for path in files:
            with atomic_path(target / path.relative_to(source)) as tmp:
                shutil.copyfile(path, tmp)
        written.append(target)
    return written

