#!/usr/bin/env bash
# Do two commits give the same outputs? For a refactor that must not change behaviour.
#
#   bash bench/same_outputs.sh REV_BEFORE REV_AFTER [WORK_DIR]
#
# For each commit (a git worktree of it, run with this checkout's virtual environment): trains the
# Quickstart model (configs/offline-e5-small.yaml, train.precision=bf16 where the CPU offers it, else
# fp32, so no timing decides anything), scores seeds/ with the batch scorer in fp32 and onnx, packages
# it with the same precision, serves it with bentoml serve on 127.0.0.1, and saves the answers to
# /classify, /classify_page (every seed page), /metadata and a bad request. Then compares file by file.
# Expected differences: artifact.json "created", the store tag in metadata.json, timings in report.md.
# About 10 minutes per commit on 2 cores.
set -euo pipefail
BEFORE=$1; AFTER=$2; WORK=${3:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC1091
. "$ROOT/.venv/bin/activate"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 BENTOML_DO_NOT_TRACK=true
PRECISION=$(python -c "from runtime.threads import cpu_offers_bf16; print('bf16' if cpu_offers_bf16() else 'fp32')")

capture() {  # capture REV OUT PORT
  local rev=$1 out=$2 port=$3 tree="$WORK/tree-$1"
  git -C "$ROOT" worktree add -q --detach "$tree" "$rev"
  mkdir -p "$out"
  (
    cd "$tree"  # python -m and bentoml serve import the packages from the working directory first
    export BENTOML_HOME="$out/bentoml"
    python -m training.train --config configs/offline-e5-small.yaml --set "output_dir=$out/art" \
      --set "train.precision=$PRECISION" > "$out/train.log" 2>&1
    python -m serving.batch seeds -o "$out/scored.jsonl" --model "$out/art" --no-progress > "$out/batch.log" 2>&1
    python -m serving.batch seeds -o "$out/scored-onnx.jsonl" --model "$out/art" --precision onnx \
      --no-progress > "$out/batch-onnx.log" 2>&1
    cp -r "$out/art" "$out/art-pkg"
    python -m serving.package "$out/art-pkg" --precision "$PRECISION" > "$out/package.log" 2>&1
    bentoml serve serving.service:FutureIndustryClassifier --host 127.0.0.1 --port "$port" > "$out/serve.log" 2>&1 &
    local server=$!
    for _ in $(seq 1 150); do curl -sf "localhost:$port/readyz" > /dev/null && break; sleep 2; done
    python - "$port" "$out" <<'PY'
import pathlib, sys
import httpx
port, out = sys.argv[1], pathlib.Path(sys.argv[2])
url = f"http://127.0.0.1:{port}"
texts = ["推动氢能“制、储、运、加、用”全产业链协同发展", "上一篇 2024年9月24日", "產(chǎn)業(yè)發展人形機器人", "䫟"]
(out / "classify.json").write_text(httpx.post(f"{url}/classify", json={"texts": texts}, timeout=120).text)
for page in sorted(pathlib.Path("seeds").glob("*.txt")):
    reply = httpx.post(f"{url}/classify_page", json={"text": page.read_text(encoding="utf-8"), "url": page.name},
                       timeout=300)
    (out / f"page-{page.stem}.json").write_text(reply.text)
(out / "metadata.json").write_text(httpx.get(f"{url}/metadata", timeout=60).text)
bad = httpx.post(f"{url}/classify", json={"texts": [1]}, timeout=60)
(out / "bad.json").write_text(f"{bad.status_code} {bad.text}")
PY
    kill "$server"; wait "$server" || true
  )
  git -C "$ROOT" worktree remove --force "$tree"
}

capture "$BEFORE" "$WORK/before" 3301
capture "$AFTER" "$WORK/after" 3302
cd "$WORK"
status=0
for f in art/model.safetensors art/tfidf_weights.npz art/tfidf_vocabulary.json art/thresholds.json art/metrics.json \
         art/calibration.txt art/tokenizer.json art/config.json art/labels.json scored.jsonl scored.pages.jsonl \
         scored.errors.jsonl scored-onnx.jsonl scored-onnx.pages.jsonl classify.json bad.json \
         before/page-*.json; do
  f=${f#before/}
  if cmp -s "before/$f" "after/$f"; then echo "same       $f"; else echo "DIFFERENT  $f"; status=1; fi
done
diff <(python -m json.tool before/metadata.json | grep -v '"model"') \
     <(python -m json.tool after/metadata.json | grep -v '"model"') > /dev/null \
  && echo "same       metadata.json (the store tag aside)" || { echo "DIFFERENT  metadata.json"; status=1; }
echo "outputs in $WORK"
exit $status
