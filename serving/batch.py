"""Score new crawls from the command line, resumably, in-process or on a Ray cluster.

    python -m serving.batch crawl/ more.jsonl page.html -o scored/units.jsonl
    python -m serving.batch crawl/ -o scored/units.jsonl --model artifacts/offline-small
    python -m serving.batch crawl/ -o scored/units.jsonl --engine ray --actors 2      # pip install -e '.[ray]'

The pieces, one module each:
- serving/sources.py       where documents come from: paths, symlink policy, decoding, HTML, .jsonl lines
- serving/output.py        where results go: the resumable writer, the run manifest, the errors file
- serving/local_engine.py  what runs the model in this process (the default)
- serving/ray_engine.py    what runs the model on Ray Data actors (--engine ray)

Inputs: local files and folders, or URIs that pyarrow.fs opens (s3://, gs://, hdfs://, file://).
Outputs, for -o scored/units.jsonl: units.jsonl (one record per unit; -o units.parquet writes a
folder of Parquet parts instead), units.pages.jsonl (one
summary per document, the commit record), units.errors.jsonl (every skipped or failed path
with its reason) and units.run.json (model and precision). A document is finished once its
summary line is written; rerunning the same command skips finished documents and drops unit
lines of an unfinished one, so an interrupted run resumes without losing or duplicating one.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

from runtime.logs import setup_logging
from runtime.precision import CHOICES, ONNX_PRECISIONS
from serving.local_engine import DEFAULT_MAX_UNITS_PER_DOC, Terminated
from serving.output import RECORD_VERSION, ResumeMismatch, Tally, errors_path, open_writer, pages_path, start
from serving.sources import JSONL_SUFFIXES

log = logging.getLogger("serving.batch")

DEFAULT_MODEL = "future-industry-classifier:latest"
ENGINES = ("local", "ray")
RAY_MISSING = ("--engine ray needs Ray Data, which is not installed: pip install -e '.[ray]' "
               "(or pip install 'ray[data]==2.60.0').")


class BatchError(Exception):
    """A misconfiguration; the message is one sentence saying what to do."""


def resolve_model(model: str) -> tuple[Path, str]:
    """An artifact folder or a BentoML tag -> (folder holding the artifact, display name)."""
    from runtime.artifact import read_artifact_meta
    from runtime.errors import ArtifactError

    path = Path(model)
    if path.is_dir():
        try:
            read_artifact_meta(path)
        except ArtifactError as exc:
            raise BatchError(f"--model: {exc}") from None
        return path, str(path)
    import bentoml

    try:
        stored = bentoml.models.get(model)
    except Exception as exc:  # bentoml raises NotFound or a tag-format error
        raise BatchError(
            f"--model {model!r} is neither an artifact folder nor a model in the BentoML store "
            f"({type(exc).__name__}: {exc}); train one with python -m training.train and package it with "
            "python -m serving.package ARTIFACT_DIR, or pass the artifact folder.") from None
    return Path(stored.path), str(stored.tag)


def model_id(path: Path) -> str:
    """Identity of a trained model: its artifact.json (run name, creation time, metrics) hashed."""
    from runtime.artifact import ARTIFACT_FILE

    return hashlib.sha256((path / ARTIFACT_FILE).read_bytes()).hexdigest()[:16]


# Said once when no precision is recorded and none was asked for: the default run scores in fp32
# rather than timing every variant (minutes, GBs and ONNX exports) without being asked.
NO_RECORD_HINT = ("no precision is recorded with %s, so scoring in fp32 (exact). To choose a faster one once: "
                  "python -m serving.package ARTIFACT_DIR (times them and records the choice with the stored model), "
                  "or --precision auto here (times fp32, int8, bf16 where offered, and onnx/onnx-int8 with the onnx "
                  "extra, writing their ONNX graphs into the folder, and records the choice in its precision.json), "
                  "or name one: --precision int8")


def resolve_precision(path: Path, requested: str | None, batch_size: int) -> str:
    """The concrete precision every Ray actor will use: explicit, recorded, or decided once here
    (runtime.precision.resolve, as Classifier.from_artifact applies it for the in-process engine)."""
    from runtime.classifier import Classifier
    from runtime.precision import AUTO, resolve

    chosen, _ = resolve(path, requested)
    if chosen != AUTO:
        return chosen
    return Classifier.from_artifact(path, batch_size=batch_size, precision=AUTO).precision


def run(inputs: list[str], out: Path, model: str, batch_size: int = 64, chunk_units: int = 2048,
        progress: bool = False, precision: str | None = None, engine: str = "local",
        max_units: int = DEFAULT_MAX_UNITS_PER_DOC, follow_symlinks: bool = False, address: str | None = None,
        actors: int = 1, cache: Path | None = None, reuse: bool = True, explain: bool = False) -> Tally:
    """Score `inputs` into `out`. Each distinct unit is scored once per run (`reuse`), and once per model
    across runs with a `cache` folder (serving/reuse.py). With `explain` each unit record carries the
    evidence for its directions (runtime/evidence.py)."""
    from runtime.text import PREPROCESSING_VERSION
    from runtime.threads import configure_threads

    path, name = resolve_model(model)
    if precision is None:
        from runtime.precision import recorded_precision

        if recorded_precision(path) is None:  # both engines then score in fp32
            log.info(NO_RECORD_HINT, name)
    if explain and precision in ONNX_PRECISIONS:
        raise BatchError(f"--explain needs the model's torch weights, which --precision {precision} does without; "
                         "use --precision fp32 (or int8, bf16)")
    if precision in ONNX_PRECISIONS:
        from runtime import onnx_runtime

        if not onnx_runtime.available():  # checked here, not inside a Ray actor or after the model loaded
            raise BatchError(f"--precision {precision} needs ONNX Runtime: {onnx_runtime.INSTALL_HINT}")
    if engine == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
            raise BatchError(RAY_MISSING)
        from serving import ray_engine
        chosen = resolve_precision(path, precision, batch_size)
    else:
        from runtime.classifier import Classifier
        from serving import local_engine

        threads = configure_threads()
        try:
            classifier = Classifier.from_artifact(path, batch_size=batch_size, precision=precision)
        except ValueError as exc:  # a precision this device cannot run (fp16 on a CPU, int8 on a GPU)
            raise BatchError(f"--precision {precision}: {exc}") from None
        chosen = classifier.precision
    if explain and chosen in ONNX_PRECISIONS:  # recorded with the model, not asked for
        raise BatchError(f"--explain needs the model's torch weights, but {name} is recorded to score with "
                         f"{chosen}, which does without them; pass --precision fp32 (or int8, bf16)")
    if cache is not None and not reuse:
        raise BatchError("--cache keeps the scores that reuse looks up; drop --no-reuse or --cache")
    if cache is not None:  # checked before any document is scored or a Ray actor starts
        import sqlite3

        import diskcache

        try:
            diskcache.Cache(str(cache)).close()
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise BatchError(f"--cache {cache}: cannot keep a cache there ({exc}); name a folder you can "
                             "write to (it is created if missing)") from None
    run_info = {"model": name, "model_id": model_id(path), "precision": chosen, "max_units_per_doc": max_units,
                "preprocessing_version": PREPROCESSING_VERSION, "record_version": RECORD_VERSION, "engine": engine,
                "explain": explain}
    try:
        done = start(out, run_info)
    except ResumeMismatch as exc:
        raise BatchError(str(exc)) from None
    writer = open_writer(out)
    tally = Tally(writer)
    try:
        if engine == "ray":
            log.info("model %s at %s on Ray; %d documents already in %s", name, chosen, len(done), out)
            ray_engine.run(path, chosen, inputs, tally, done, batch_size=batch_size, max_units=max_units,
                           follow_symlinks=follow_symlinks, address=address, actors=actors, progress=progress,
                           reuse=reuse, cache=cache, model_id=run_info["model_id"], explain=explain)
        else:
            from serving.sources import iter_documents

            log.info("model %s at %s (%s), %d threads; %d documents already in %s", name, chosen,
                     classifier.precision_source, threads, len(done), out)
            scorer = classifier
            if reuse:
                from serving.reuse import ReusingScorer, scoring_identity

                scorer = ReusingScorer(classifier, scoring_identity(classifier, run_info["model_id"]), cache)
                tally.reuse = scorer.stats
            explainer = None
            if explain:
                from runtime.evidence import Explainer

                explainer = Explainer(classifier)
            try:
                local_engine.run(scorer, iter_documents(inputs, follow_symlinks, done), tally, chunk_units,
                                 max_units, progress, explainer)
            finally:
                if reuse:
                    scorer.close()
    except (KeyboardInterrupt, Terminated):
        log.warning("interrupted: %d documents finished this run; rerun the same command to resume", tally.written)
        raise
    finally:
        writer.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.batch",
        description="Split crawled pages into units, classify every unit, and write JSONL (one record per unit) "
                    "plus a page-summary JSONL and an errors JSONL. Resumable: rerun the same command after an "
                    "interruption.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Inputs: .txt / .html files, folders (recursive), .jsonl with one page per line "
               "({\"text\": ..., \"url\": ..., \"id\": ...}).\n"
               "Example: python -m serving.batch crawl/ -o scored/units.jsonl --model artifacts/offline-small\n"
               "         python -m serving.batch crawl/ -o scored/units.jsonl --engine ray --address auto --actors 4",
    )
    parser.add_argument("inputs", nargs="+", help="files or folders to score, local or any URI pyarrow.fs opens "
                                                  "(s3://bucket/crawl/, gs://..., hdfs://..., file:///...)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="unit records to write: a .jsonl file, or a .parquet folder of part files; page "
                             "summaries go to OUTPUT's stem + .pages.jsonl")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"BentoML model tag or training artifact folder (default {DEFAULT_MODEL})")
    parser.add_argument("--engine", default="local", choices=ENGINES,
                        help="local (default): this process; ray: Ray Data actors (pip install -e '.[ray]')")
    parser.add_argument("--address", default=None,
                        help="--engine ray: the cluster to join (auto, ray://host:10001; default RAY_ADDRESS "
                             "or a local Ray started for this run)")
    parser.add_argument("--actors", type=int, default=1, help="--engine ray: model copies (actors) in the pool "
                                                              "(default 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="units per model call (default 64)")
    parser.add_argument("--chunk-units", type=int, default=2048,
                        help="local engine: about how many units to length-sort and score together (default 2048)")
    parser.add_argument("--precision", default=None, choices=CHOICES,
                        help="default: the precision recorded with the model (by python -m serving.package), else "
                             "fp32 (exact); auto: the recorded one, else time every variant now (minutes; ONNX graphs "
                             "are written into the artifact folder) and record the choice; onnx and onnx-int8 run "
                             "ONNX Runtime (pip install -e '.[onnx]')")
    parser.add_argument("--max-units-per-doc", type=int, default=DEFAULT_MAX_UNITS_PER_DOC,
                        help=f"score at most this many units of one document; the summary says when a document "
                             f"was cut (default {DEFAULT_MAX_UNITS_PER_DOC})")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="follow symlinks inside folders even when they point outside the input folders")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="keep every unit's scores in DIR and reuse them in later runs of the same model, "
                             "precision and preprocessing (a daily re-crawl then costs only its new text); "
                             "entries of any other model are never read; shareable by several processes")
    parser.add_argument("--no-reuse", action="store_true",
                        help="score every unit even when the same text was scored earlier in the run (for "
                             "measurements; the output is the same)")
    parser.add_argument("--explain", action="store_true",
                        help="add each unit's evidence: for every direction it was given, the spans of its cleaned "
                             "text that drove it, with weights (runtime/evidence.py; seconds of CPU per unit and "
                             "direction on the e5 model, see docs/evidence.md)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    setup_logging()
    if min(args.batch_size, args.chunk_units, args.actors, args.max_units_per_doc) < 1:
        parser.error("--batch-size, --chunk-units, --actors and --max-units-per-doc must be positive")
    if args.output.suffix.lower() not in JSONL_SUFFIXES | {".parquet"}:
        parser.error("--output must end in .jsonl (one JSON record per unit) or .parquet (a folder of Parquet parts)")

    started = time.perf_counter()
    try:
        tally = run(args.inputs, args.output, args.model, args.batch_size, args.chunk_units, not args.no_progress,
                    args.precision, args.engine, args.max_units_per_doc, args.follow_symlinks, args.address,
                    args.actors, args.cache, not args.no_reuse, args.explain)
    except BatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated):
        return 130
    seconds = time.perf_counter() - started
    for record in tally.skipped[:20]:
        print(f"skipped: {record['source']}: {record['reason']}", file=sys.stderr)
    for record in tally.failed:
        print(f"failed: {record['source']}: {record['reason']}", file=sys.stderr)
    if len(tally.skipped) > 20:
        print(f"... and {len(tally.skipped) - 20} more skipped; all are in {errors_path(args.output)}", file=sys.stderr)
    print(f"{tally.line()} in {seconds:.1f} s -> {args.output}, {pages_path(args.output)} "
          f"(reasons: {errors_path(args.output)})", file=sys.stderr)
    if tally.reuse is not None:
        print(f"reuse: {tally.reuse.line()}", file=sys.stderr)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
