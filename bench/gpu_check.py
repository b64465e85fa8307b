"""The GPU check, for a session that is lent a CUDA GPU: Quickstart training, packaging with auto, inference speed.

    python -m bench.gpu_check                 # writes bench/results/gpu-*.json; skips (exit 0) with no GPU
    python -m bench.gpu_check --units 4000

Three steps, each timed on the GPU torch sees first (its name goes into every file):
1. `python -m training.train --config configs/offline-e5-small.yaml` into a temporary output folder
   (training picks the GPU itself) -> bench/results/gpu-training.json: wall time, the precision
   `auto` chose and its probe timings, the test metrics;
2. `python -m serving.package` of that artifact with `--precision auto` into a temporary BentoML store
   -> the precision it decided and every option's units/s and agreement (in gpu-training.json);
3. our Classifier on that artifact in fp32, fp16 and bf16 (where the GPU has it) on --units real units,
   median of --repeats -> bench/results/gpu-inference.json: units/s, speed-up over fp32, label-set
   agreement with fp32.

With no CUDA GPU it says so and exits 0 without writing anything, so it is safe anywhere.
"""

from __future__ import annotations

import sys

if not __package__:
    sys.exit("run it from the repository root as a module: python -m bench.gpu_check --help")

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, ROOT, benchmark_units, format_table, header, positive_int, write_results

CONFIG = "configs/offline-e5-small.yaml"


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def run(command: list[str], env: dict | None = None) -> tuple[float, str]:
    """Run a command from the repository root; (seconds, its output). A failure stops the check with its tail."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu_check: {' '.join(command)} failed ({done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def train_and_package(workdir: Path) -> dict:
    artifact = workdir / "artifact"
    seconds, _ = run([sys.executable, "-m", "training.train", "--config", CONFIG, "--no-progress",
                      "--set", f"output_dir={artifact}"])
    meta = json.loads((artifact / "artifact.json").read_text(encoding="utf-8"))
    metrics = json.loads((artifact / "metrics.json").read_text(encoding="utf-8"))
    env = {**os.environ, "BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    package_s, _ = run([sys.executable, "-m", "serving.package", str(artifact), "--precision", "auto"], env=env)
    decided = json.loads((artifact / "precision.json").read_text(encoding="utf-8"))
    return {"artifact": artifact, "training": {"command": f"python -m training.train --config {CONFIG}",
                                               "seconds": round(seconds, 1),
                                               "precision": meta.get("precision"),
                                               "precision_timings": meta.get("precision_timings"),
                                               "precision_reason": meta.get("precision_reason"),
                                               "metrics": metrics},
            "packaging": {"command": "python -m serving.package ARTIFACT --precision auto",
                          "seconds": round(package_s, 1), "decision": decided}}


def inference(artifact: Path, units: int, repeats: int, device: str = "cuda") -> dict:
    import numpy as np

    from runtime.classifier import Classifier
    from runtime.decide import decide, label_matrix
    from runtime.precision import offered, time_scoring

    clf = Classifier.from_artifact(artifact, precision="fp32", device=device)
    texts = benchmark_units(units)
    encoded, _ = clf.encode(texts)
    rows: dict = {}
    reference = None
    for option in offered(device):
        timings, probs = [], None
        for _ in range(repeats):
            seconds, probs = time_scoring(clf, option, encoded)
            timings.append(seconds)
        fused = clf.fuse(probs, texts)
        labels = label_matrix(decide(fused, clf.directions, clf.thresholds, clf.other), clf.directions)
        reference = labels if reference is None else reference  # fp32 comes first
        rows[option] = {"units_per_s": round(units / float(np.median(timings)), 1),
                        "seconds": [round(t, 3) for t in timings],
                        "agreement_with_fp32": round(float((labels == reference).all(axis=1).mean()), 4)}
    for row in rows.values():
        row["speedup_vs_fp32"] = round(row["units_per_s"] / rows["fp32"]["units_per_s"], 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=positive_int, default=2000, help="real units per inference timing")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timings per precision (median)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where gpu-*.json go")
    args = parser.parse_args(argv)

    name = gpu_name()
    if name is None:
        print("gpu_check: torch sees no CUDA GPU here; nothing to check (run it where one is lent)")
        return 0
    settings = {"gpu": name, "units": args.units, "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="fic-gpu-") as tmp:
        trained = train_and_package(Path(tmp))
        rows = inference(trained.pop("artifact"), args.units, args.repeats)
    head = header("gpu_check", settings)
    training = write_results(args.out_dir / "gpu-training.json", {**head, "step": "training", **trained})
    inferred = write_results(args.out_dir / "gpu-inference.json", {**head, "step": "inference", "precisions": rows})
    print(f"{name}: training {trained['training']['seconds']} s in {trained['training']['precision']}; "
          f"packaging chose {trained['packaging']['decision'].get('precision')}")
    table = [[k, v["units_per_s"], v["speedup_vs_fp32"], v["agreement_with_fp32"]] for k, v in rows.items()]
    print(format_table(["precision", "units/s", "x fp32", "agreement"], table))
    print(f"results in {training} and {inferred}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
