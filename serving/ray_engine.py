"""What runs the model on Ray: Ray Data reads and splits pages in tasks and scores them in an actor pool.

Same inputs (serving/sources.py), same splitting and scoring code (serving/local_engine.py),
same writer (serving/output.py) as the in-process engine; only where the work runs differs.

Pipeline (Ray Data, streaming):
    paths (listed on the driver)  -> flat_map  read + decode + HTML -> one row per document (task)
                                  -> map       split into units, capped          (task)
                                  -> map_batches  Scorer: one Classifier per actor, length-sorted batches
                                  -> iter_batches on the driver -> resumable writer

Guarantees, and who gives them:
- Ray Data retries a failed read/split task and restarts a dead actor (Ray task and actor fault
  tolerance); the streaming executor applies backpressure, so memory is bounded by the blocks in
  flight, not by the crawl.
- Ray Data gives no exactly-once output. Loss-free, resumable, document-granular output is ours:
  the driver writes each document's unit lines, fsyncs, then its summary line (the commit record),
  and a rerun skips every document with a summary (serving/output.py). A killed run never shows a
  half-written document as finished; the manifest (OUT.run.json) makes a resume refuse another
  model or precision.
- `preserve_order` makes the output order the input order, like the in-process engine.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from runtime.text import Unit
from serving.local_engine import score_split, split_document
from serving.output import Tally
from serving.sources import Document, FileTask, Outcome, is_uri, read, walk

# Documents per actor call; their units are length-sorted and scored together.
DOCS_PER_BATCH = 32
# CPU share of one read or split task: small, so they run beside actors that hold most CPUs.
TASK_CPUS = 0.25
# Ray Data block size target (its default is 128 MiB): a few dozen pages per block.
BLOCK_BYTES = 128 * 1024


def _read_rows(row: dict, done: frozenset) -> list[dict]:
    """One file -> rows: a document (status ok, with text) or an outcome (status and reason)."""
    out = []
    for item in read(FileTask(row["path"], row["doc_id"], row["kind"]), done):
        if isinstance(item, Outcome):
            out.append({"doc_id": item.doc_id, "url": None, "source": item.source, "status": item.status,
                        "reason": item.reason, "text": "", "warnings": "[]"})
        else:
            out.append({"doc_id": item.id, "url": item.url, "source": item.source, "status": "ok", "reason": "",
                        "text": item.text, "warnings": json.dumps(item.warnings, ensure_ascii=False)})
    return out


def _split_row(row: dict, max_units: int) -> dict:
    """Page -> units (stateless); the page text is dropped from the row once split."""
    units_json, cap_json, warnings = "[]", "null", row["warnings"]
    if row["status"] == "ok":
        doc = Document(row["doc_id"], row["text"], warnings=json.loads(row["warnings"]))
        units, warns, cap = split_document(doc, max_units)
        units_json = json.dumps([[u.index, u.start, u.end, u.text] for u in units], ensure_ascii=False)
        cap_json, warnings = json.dumps(cap), json.dumps(warns, ensure_ascii=False)
    return {"doc_id": row["doc_id"], "url": row["url"], "source": row["source"], "status": row["status"],
            "reason": row["reason"], "units": units_json, "cap": cap_json, "warnings": warnings}


class Scorer:
    """One model copy per actor (Ray Data's actor pool); each call scores a batch of documents."""

    def __init__(self, model_path: str, precision: str, batch_size: int, threads: int, reuse: bool = True,
                 cache: str | None = None, model_id: str = "", explain: bool = False):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from runtime.classifier import Classifier
        from runtime.threads import configure_threads

        configure_threads(threads)
        self.classifier = Classifier.from_artifact(model_path, batch_size=batch_size, precision=precision)
        self.scorer = self.classifier
        self.explainer = None
        if explain:
            from runtime.evidence import Explainer

            self.explainer = Explainer(self.classifier)
        if reuse:  # per actor in memory; a cache folder is shared by the actors of one machine (or a shared disk)
            from serving.reuse import ReusingScorer, scoring_identity

            self.scorer = ReusingScorer(self.classifier, scoring_identity(self.classifier, model_id), cache)

    def __call__(self, batch: dict) -> dict:
        ok = [i for i, status in enumerate(batch["status"]) if status == "ok"]
        split = [([Unit(*u) for u in json.loads(batch["units"][i])], json.loads(batch["warnings"][i]),
                  json.loads(batch["cap"][i])) for i in ok]
        before = dataclasses.replace(self.scorer.stats) if self.scorer is not self.classifier else None
        scored = score_split(self.scorer, split, self.explainer)
        records = [""] * len(batch["status"])
        summaries = [""] * len(batch["status"])
        for i, (units, summary) in zip(ok, scored):
            records[i] = json.dumps(units, ensure_ascii=False)
            summaries[i] = json.dumps(summary, ensure_ascii=False)
        # This call's reuse counts ride on the first row, so the driver can add them up.
        counts = [""] * len(batch["status"])
        if before is not None and counts:
            now = self.scorer.stats
            counts[0] = json.dumps([now.units - before.units, now.computed - before.computed,
                                    now.from_disk - before.from_disk])
        return {"doc_id": batch["doc_id"], "url": batch["url"], "source": batch["source"], "status": batch["status"],
                "reason": batch["reason"], "records": records, "summary": summaries, "reuse": counts}


def actor_resources(actors: int) -> dict:
    """CPUs (and GPUs) per actor from the cluster's resources, leaving room for read/split tasks."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    node_cpus = min((n.get("CPU", 0) for n in nodes), default=1) or 1
    per_node = math.ceil(actors / max(1, len(nodes)))
    cpus = max(0.5, (node_cpus - 2 * TASK_CPUS) / per_node)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    resources = {"num_cpus": cpus, "threads": max(1, math.ceil(cpus))}
    if gpus:
        resources["num_gpus"] = min(1.0, gpus / actors)
    return resources


def run(model_path: Path, precision: str, inputs: list[str], tally: Tally, done: set[str], *, batch_size: int,
        max_units: int, follow_symlinks: bool, address: str | None, actors: int, progress: bool,
        reuse: bool = True, cache: Path | None = None, model_id: str = "", explain: bool = False) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    tasks = []
    for item in walk(inputs, follow_symlinks):  # paths only: pages are read inside Ray tasks
        if isinstance(item, Outcome):
            tally.outcome(item.to_dict())
        elif item.kind == "file" and item.doc_id in done:
            tally.outcome({"source": item.path, "doc_id": item.doc_id, "status": "resumed", "reason": ""})
        else:
            path = item.path if is_uri(item.path) else os.path.abspath(item.path)
            tasks.append({"path": path, "doc_id": item.doc_id, "kind": item.kind})
    if not tasks:
        return

    started_here = not ray.is_initialized()
    if started_here:
        # A Ray started here for this one run listens on loopback only, not on the machine's address.
        local = {} if address or os.environ.get("RAY_ADDRESS") else {"_node_ip_address": "127.0.0.1"}
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}, **local)
    try:
        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = progress
        # Small blocks, so the documents of one big .jsonl reach every actor rather than one.
        ctx.target_max_block_size = BLOCK_BYTES
        resources = actor_resources(actors)
        threads = resources.pop("threads")
        done_frozen = frozenset(done)
        ds = ray.data.from_items(tasks, override_num_blocks=max(1, min(len(tasks), 64 * actors)))
        ds = ds.flat_map(_read_rows, fn_kwargs={"done": done_frozen}, num_cpus=TASK_CPUS)
        ds = ds.map(_split_row, fn_kwargs={"max_units": max_units}, num_cpus=TASK_CPUS)
        ds = ds.map_batches(Scorer, batch_size=DOCS_PER_BATCH, batch_format="numpy",
                            compute=ActorPoolStrategy(size=actors),
                            fn_constructor_kwargs={"model_path": str(model_path), "precision": precision,
                                                   "batch_size": batch_size, "threads": threads, "reuse": reuse,
                                                   "cache": str(Path(cache).resolve()) if cache else None,
                                                   "model_id": model_id, "explain": explain},
                            **resources)
        if reuse:
            from serving.reuse import ReuseStats

            tally.reuse = ReuseStats()
        for batch in ds.iter_batches(batch_size=DOCS_PER_BATCH, batch_format="numpy", prefetch_batches=1):
            if tally.reuse is not None:
                for counts in batch["reuse"]:
                    if counts:
                        units, computed, from_disk = json.loads(counts)
                        tally.reuse.units += units
                        tally.reuse.computed += computed
                        tally.reuse.from_disk += from_disk
            finished = []
            for i, status in enumerate(batch["status"]):
                doc_id, source = batch["doc_id"][i], batch["source"][i]
                doc_id = doc_id if isinstance(doc_id, str) else None  # Arrow nulls come back as None or NaN
                if status == "resumed":
                    tally.outcome({"source": source, "doc_id": doc_id, "status": "resumed", "reason": ""})
                elif doc_id is not None and not tally.first_time(doc_id, source):
                    continue
                elif status != "ok":
                    tally.outcome({"source": source, "doc_id": doc_id, "status": str(status),
                                   "reason": str(batch["reason"][i])})
                else:
                    url = batch["url"][i]
                    doc_head = {"doc_id": doc_id, "url": url if isinstance(url, str) else None, "source": str(source)}
                    finished.append((doc_head, json.loads(batch["records"][i]), json.loads(batch["summary"][i])))
            tally.scored(finished)
    finally:
        if started_here:
            ray.shutdown()

