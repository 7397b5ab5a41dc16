"""A whole run: every job serially here or over Dask (:mod:`.distributed`), then the COCO JSON,
the failure log and the summary.

:func:`run_jobs` is what ``clipseg segment`` and ``clipseg batch`` call after discovering the
jobs (:func:`clipseg.apps.jobs.discover`): it leaves out the complete ones (``--resume``),
stops options that cannot work before the first image (:func:`.batch.preflight`), then
processes the rest (:func:`.batch.process_job`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import remove_leftovers
from ..formats import io
from ..resolve import resolve_config
from .batch import arch_of, preflight, process_job, segmenter_for
from .batch_instances import coco_instances_path, write_run_coco_instances
from .jobs import Job, Outcome, RunOptions, class_entries, expected_hash, is_complete, vector_path
from .outputs import describe_os_error

if TYPE_CHECKING:
    from ..config import SegmentConfig
    from ..text import ClassSpec

__all__ = ["FAILURE_LOG", "Summary", "run_jobs", "write_run_coco"]


FAILURE_LOG = "clipseg-failures.log"


@dataclass
class Summary:
    """All outcomes of a run and its wall time."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    coco: Path | None = None
    log: Path | None = None    # the failure log, when one was written
    errors: list[str] = field(default_factory=list)  # run-level I/O errors (COCO, log)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def report(self) -> str:
        """Human-readable end-of-run summary."""
        lines = [f"clipseg: {len(self.outcomes)} images: {self.count('done')} segmented, "
                 f"{self.count('skipped')} skipped (already complete), "
                 f"{len(self.failures)} failed; {self.seconds:.1f} s"]
        kept = sum(o.status == "skipped" and bool(o.reason) for o in self.outcomes)
        if kept:
            lines.append(f"  {kept} of the skipped were reviewed or edited by a person: kept")
        lines += [f"  FAILED {o.name}: {o.reason}" for o in self.failures]
        lines += [f"  ERROR {e}" for e in self.errors]
        if self.coco is not None:
            lines.append(f"  COCO JSON: {self.coco}")
        if self.log is not None:
            lines.append(f"  details (tracebacks) of the failures: {self.log}; fix or remove "
                         "those images and run again: the others are skipped (--resume)")
        if self.errors:
            lines.append("  the label images and sidecars written before are complete")
        return "\n".join(lines)


def run_jobs(jobs: Sequence[Job], config: SegmentConfig, classes: Sequence[ClassSpec],
             options: RunOptions, *,
             dask_scheduler: str | None = None, dask_local: int | None = None) -> Summary:
    """Run every job (serially, or over Dask), write the COCO JSON, return the summary."""
    start = time.perf_counter()
    config = resolve_config(config)  # the model's defaults, once: the same in every worker
    run_hash = expected_hash(config, classes)
    todo = [j for j in jobs if not (options.resume and is_complete(
        j, run_hash, scores=options.scores, vector=vector_path(j, options),
        instances=options.instances))]
    if todo:  # every check that can fail for all images fails here, before the first (exit 2)
        from ..memory import ModelFacts

        if dask_scheduler or dask_local is not None:
            facts = ModelFacts.of_arch(arch_of(config))
            if facts is not None:
                resolve_config(config, num_layers=facts.layers)
        else:  # the model is needed anyway: load it now, a load error stops the run
            segmenter = segmenter_for(config)
            _ = segmenter.resolved_config  # middle_layer / dsi_layers against the tower
            facts = ModelFacts.of_tower(segmenter.encoder.tower)
        # On a remote cluster this machine's free memory says nothing about the workers'.
        preflight(todo, config, classes, options, facts=facts,
                  check_budget=not dask_scheduler or config.model.max_memory is not None)
    if dask_scheduler or dask_local is not None:
        from .distributed import run_distributed

        outcomes = run_distributed(jobs, config, classes, options, run_hash,
                                   address=dask_scheduler, local_workers=dask_local)
    else:
        outcomes = _run_serial(jobs, config, classes, options, run_hash)
    summary = Summary(outcomes=outcomes)
    if options.coco is not None:
        try:
            remove_leftovers(options.coco)
            summary.coco = write_run_coco(jobs, outcomes, classes, options.coco)
            if options.instances is not None:
                write_run_coco_instances(jobs, outcomes, classes, options.instances,
                                         coco_instances_path(options.coco))
        except OSError as exc:  # disk full, read-only...: reported, the labels are kept
            summary.errors.append(describe_os_error(exc, "writing the COCO JSON",
                                                    options.coco))
    try:
        summary.log = _write_failure_log(summary, options.output)
    except OSError as exc:
        summary.errors.append(describe_os_error(exc, "writing the failure log",
                                                Path(options.output) / FAILURE_LOG))
    summary.seconds = time.perf_counter() - start
    return summary


def _run_serial(jobs: Sequence[Job], config: SegmentConfig, classes: Sequence[ClassSpec],
                options: RunOptions,
                run_hash: str) -> list[Outcome]:
    from tqdm import tqdm

    outcomes = []  # the model is loaded (run_jobs' checks) when any job is left to do
    bar = tqdm(jobs, unit="img", disable=not options.progress, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.name[-40:], refresh=False)
        outcomes.append(process_job(job, config, classes, options, run_hash))
    bar.close()
    return outcomes


def write_run_coco(jobs: Sequence[Job], outcomes: Sequence[Outcome], classes: Sequence[ClassSpec],
                   path: Path) -> Path | None:
    """COCO JSON over every image of the run with complete outputs (done or skipped)."""
    from ..formats.coco import write_coco

    ok = {o.name for o in outcomes if o.status in ("done", "skipped")}
    names, synonyms = class_entries(classes)
    entries = io.make_sidecar(names, synonyms=synonyms)["classes"]

    def images():
        for job in jobs:
            if job.name in ok:
                labels, _ = io.read_labels(job.base, lazy=True)
                yield job.name, labels

    return write_coco(path, entries, images())


def _write_failure_log(summary: Summary, output: Path) -> Path | None:
    """``OUT/clipseg-failures.log`` with every failure's traceback (removed after a run with
    none); returns its path when written."""
    log = Path(output) / FAILURE_LOG
    if summary.failures or summary.errors:
        text = "\n".join([f"== {o.name}\n{o.reason}\n{o.detail}" for o in summary.failures]
                         + [f"== run\n{e}\n" for e in summary.errors])
        remove_leftovers(log)
        io.atomic_write_text(log, text)
        return log
    log.unlink(missing_ok=True)
    return None
