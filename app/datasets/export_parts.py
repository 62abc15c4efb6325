"""A large PostgreSQL pairs export in several processes (issue 25: ten million pairs).

One process turns 30,000 to 50,000 pairs a second into JSONL, bound by one core (the Python of building each row),
so the export splits the project's comparison ids into contiguous ranges (`plan_parts`), one a process: the
exporting process reads the first range itself while spawned children (app.datasets.service.run_export_part) read
the others into part files in the snapshot's hidden temp directory; then the parts are appended in range order to train.jsonl / test.jsonl
(`PartRunner.append_to`), so the files are byte for byte what one process writes (rows come in comparison id order
either way; tests/datasets/test_export_parts.py). Every part reads up to the same judgment id (ExportPart.watermark,
the newest when the export began) and under READ COMMITTED one statement per range, as the single stream does.

Only for the standard pairs format (app.datasets.service.iter_pair_rows), on PostgreSQL, from
PARALLEL_MIN_COMPARISONS comparisons on (a child spends a few seconds importing the app), with `export_processes`
processes (RANKFORGE_EXPORT_PROCESSES, default: the machine's cores, at most 4). A child that fails or dies fails
the export (the snapshot never becomes visible); an export that stops (an error, a cancelled job) terminates its
children first.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.errors import Unprocessable

PARALLEL_MIN_COMPARISONS = 200_000
"""Below this many comparisons an export runs in one process."""
MAX_DEFAULT_PROCESSES = 4


@dataclass(frozen=True, slots=True)
class ExportPart:
    """A contiguous range of comparison ids (inclusive) of a PostgreSQL export, read up to the judgment id
    `watermark` (the newest when the export began): the parts of one export together read what one stream reads."""

    low: int
    high: int
    watermark: int


@dataclass
class RowTally:
    """What a snapshot's manifest says of its rows besides their number: the guideline versions of their judgments
    and the rows per day of their comparison's latest judgment. `on_comparison` before a comparison's rows, `count`
    for each row."""

    guideline_versions: set[int] = field(default_factory=set)
    rows_per_day: dict[str, int] = field(default_factory=dict)
    day: str = "unknown"
    _names: dict[tuple[int, int, int], str] = field(default_factory=dict, repr=False)

    def on_comparison(self, versions: Iterable[int], latest: datetime | None) -> None:
        self.guideline_versions.update(versions)
        if not latest:
            self.day = "unknown"
            return
        key = (latest.year, latest.month, latest.day)  # latest.date(), without making one a row
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = latest.date().isoformat()
        self.day = name

    def count(self) -> None:
        self.rows_per_day[self.day] = self.rows_per_day.get(self.day, 0) + 1

    def add(self, guideline_versions: Iterable[int], rows_per_day: dict[str, int]) -> None:
        self.guideline_versions.update(guideline_versions)
        for day, rows in rows_per_day.items():
            self.rows_per_day[day] = self.rows_per_day.get(day, 0) + rows


def export_processes() -> int:
    """How many processes a large export uses (RANKFORGE_EXPORT_PROCESSES; default the cores, at most 4)."""
    from app.config import get_settings

    configured = get_settings().export_processes
    return configured if configured > 0 else max(1, min(MAX_DEFAULT_PROCESSES, os.cpu_count() or 1))


def plan_parts(low: int, high: int, watermark: int, processes: int) -> list[ExportPart]:
    """[low, high] cut into `processes` ranges of equal width (comparison ids of one project are close to evenly
    spread: they are numbered as they are created)."""
    processes = max(1, min(processes, high - low + 1))
    width = (high - low + 1) / processes
    edges = [low + round(width * k) for k in range(processes)] + [high + 1]
    return [ExportPart(edges[k], edges[k + 1] - 1, watermark) for k in range(processes)]


# ---- the files of a part ---------------------------------------------------------------------------------------


def part_files(directory: Path, index: int, splits: Iterable[str]) -> dict[str, Path]:
    return {split: directory / f".part-{index}.{split}.jsonl" for split in splits}


def result_file(directory: Path, index: int) -> Path:
    """Where a child writes its result: {"rows", "guideline_versions", "rows_per_day"}, or {"error", "kind"}."""
    return directory / f".part-{index}.json"


def write_result(directory: Path, index: int, result: dict[str, Any]) -> None:
    target = result_file(directory, index)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(result), encoding="utf-8")
    temporary.replace(target)  # the exporting process reads a whole result or none


# ---- the exporting process ------------------------------------------------------------------------------------


class PartFailed(RuntimeError):
    """A part of a parallel export failed or its process died."""


class PartRunner:
    """The spawned children of one export (parts 1..n; the exporting process reads part 0 itself), each running
    `target(database_url, project_id, spec, weights, part as a dict, index, directory, splits, done counter)`
    (app.datasets.service.run_export_part: it ends by `write_result`).

    Use as a context manager: leaving it, normally or by an error, terminates and reaps every child still
    running. `done()` is the comparisons the children have read so far; `wait(progress)` waits for them all,
    calling progress(comparisons done) about once a second (a cancelled job raises there)."""

    def __init__(self, target: Callable[..., None], database_url: str, project_id: int, spec: dict[str, Any],
                 weights: dict[int, float], parts: list[ExportPart], directory: Path,
                 splits: Iterable[str]):  # fmt: skip
        self.directory, self.splits = Path(directory), list(splits)
        context = multiprocessing.get_context("spawn")  # not fork: the exporting process has threads and connections
        self.counters = [context.Value("q", 0, lock=False) for _ in parts]
        self.processes = [
            context.Process(target=target, name=f"rankforge-export-part-{index}", daemon=True,
                            args=(database_url, project_id, spec, weights, asdict(part), index, str(self.directory),
                                  self.splits, self.counters[index - 1]))  # fmt: skip
            for index, part in enumerate(parts, 1)
        ]

    def __enter__(self) -> PartRunner:
        for process in self.processes:
            process.start()
        return self

    def __exit__(self, *exc_info) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()

    def done(self) -> int:
        return sum(counter.value for counter in self.counters)

    def wait(self, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Every child's result, in part order; PartFailed when one failed or died, Unprocessable when its data cannot
        take the spec."""
        while alive := [process for process in self.processes if process.is_alive()]:
            if any(process.exitcode not in (0, None) for process in self.processes):
                break  # a dead child fails the export now, not when the others end
            if progress:
                progress(self.done())
            alive[0].join(timeout=1.0)
        results = []
        for index, process in enumerate(self.processes, 1):
            path = result_file(self.directory, index)
            if process.is_alive() or not path.is_file():
                raise PartFailed(f"export part {index} of {len(self.processes) + 1} ended without a result "
                                 f"(exit code {process.exitcode})")  # fmt: skip
            result = json.loads(path.read_text(encoding="utf-8"))
            if "error" in result:  # data the spec cannot take is the export's 422, as in one process
                raise (Unprocessable if result.get("kind") == "unprocessable" else PartFailed)(result["error"])
            results.append(result)
        return results

    def append_to(self, writer, results: list[dict[str, Any]], tally: RowTally) -> None:
        """The children's rows after the exporting process's own, in part order, into the writer's split files."""
        for index, result in enumerate(results, 1):
            files = part_files(self.directory, index, self.splits)
            for split in self.splits:
                writer.append_jsonl(split, files[split], result["rows"][split])
                files[split].unlink()
            result_file(self.directory, index).unlink()
            tally.add(result["guideline_versions"], result["rows_per_day"])
