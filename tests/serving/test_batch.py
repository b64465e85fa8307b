"""Batch scorer reliability: every path gets one outcome, bounded work per document, precision decided once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serving.batch import main
from serving.sources import decode, iter_documents

pytestmark = pytest.mark.slow


def score(capsys, *args: str) -> tuple[int, str]:
    code = main([*args, "--no-progress"])
    return code, capsys.readouterr().err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_decode_replaces_a_few_bad_bytes_but_detects_real_legacy_encodings() -> None:
    text, warning = decode("发展氢能产业。".encode() + b"\xff" + "培育商业航天。".encode())
    assert text == "发展氢能产业。\ufffd培育商业航天。" and "1 invalid byte sequence" in warning
    assert decode("推动氢能产业发展。版权所有。".encode("gbk")) == ("推动氢能产业发展。版权所有。", None)
    assert decode("發展低空經濟，培育商業航天。".encode("big5")) == ("發展低空經濟，培育商業航天。", None)


def test_every_path_ends_scored_skipped_or_failed(tiny_artifact, tmp_path, capsys) -> None:
    crawl, outside = tmp_path / "crawl", tmp_path / "outside"
    (crawl / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("发展量子科技。", encoding="utf-8")
    (crawl / "good.txt").write_text("推动氢能产业发展。", encoding="utf-8")
    (crawl / "empty.txt").write_bytes(b"")
    (crawl / "blank.html").write_text("<html><script>x()</script></html>", encoding="utf-8")
    (crawl / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (crawl / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (crawl / "badbyte.txt").write_bytes("建设智算中心。".encode() + b"\xfe" + "发展低空经济。".encode())
    (crawl / "pages.jsonl").write_text(json.dumps({"id": "j1", "text": "培育商业航天。"}, ensure_ascii=False) + "\n"
                                       + json.dumps({"id": "j2", "text": "  "}) + "\n{oops\n", encoding="utf-8")
    (crawl / "sub" / "loop").symlink_to(crawl, target_is_directory=True)
    (crawl / "sub" / "inside.txt").symlink_to(crawl / "good.txt")
    (crawl / "escape.txt").symlink_to(outside / "secret.txt")
    (crawl / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    out = tmp_path / "out" / "units.jsonl"

    code, err = score(capsys, str(crawl), str(tmp_path / "missing.txt"), "-o", str(out), "--model", str(tiny_artifact),
                      "--precision", "fp32")
    assert code == 1, err  # failures (a missing input, a bad JSON line) make the exit status 1
    pages = {p["doc_id"]: p for p in read_jsonl(out.with_name("units.pages.jsonl"))}
    assert set(pages) == {"crawl/good.txt", "crawl/badbyte.txt", "j1", "crawl/sub/inside.txt"}
    assert "U+FFFD" in pages["crawl/badbyte.txt"]["warnings"][0]
    errors = read_jsonl(out.with_name("units.errors.jsonl"))
    by_name = {Path(e["source"].split(":")[0]).name + (":" + e["source"].split(":")[1] if ":" in e["source"] else ""):
               (e["status"], e["reason"]) for e in errors}
    assert by_name["empty.txt"] == ("skipped", "empty")
    assert by_name["blank.html"] == ("skipped", "empty: no visible text")
    assert by_name["binary.txt"][0] == "skipped" and "binary" in by_name["binary.txt"][1]
    assert by_name["photo.png"][0] == "skipped" and "unsupported file type '.png'" in by_name["photo.png"][1]
    assert by_name["loop"] == ("skipped", "symlink loop")
    assert by_name["escape.txt"][0] == "skipped" and "outside the input folders" in by_name["escape.txt"][1]
    assert by_name["dangling.txt"] == ("skipped", "broken symlink")
    assert by_name["missing.txt"] == ("failed", "no such file or folder")
    assert by_name["pages.jsonl:2"] == ("skipped", "empty")
    assert by_name["pages.jsonl:3"][0] == "failed" and "not valid JSON" in by_name["pages.jsonl:3"][1]
    assert by_name["badbyte.txt"][0] == "scored"
    # One outcome per path or line: 4 scored + 8 skipped + 2 failed.
    assert "documents read 14, skipped 0 (already in output), failed 2, written 4; skipped with a reason 8; " \
           "scored with a warning 1" in err

    followed = tmp_path / "followed" / "units.jsonl"
    score(capsys, str(crawl), "-o", str(followed), "--model", str(tiny_artifact), "--precision", "fp32",
          "--follow-symlinks")
    assert "crawl/escape.txt" in {p["doc_id"] for p in read_jsonl(followed.with_name("units.pages.jsonl"))}


def test_work_per_document_is_bounded(tiny_artifact, tmp_path, capsys) -> None:
    from runtime.classifier import MAX_CHARS_PER_TOKEN, Classifier

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "many.txt").write_text("发展氢能产业。" * 300, encoding="utf-8")  # 300 units on one line
    (crawl / "long.txt").write_text("氢" * 200_000, encoding="utf-8")  # one 200,000-character unit
    out = tmp_path / "out" / "units.jsonl"
    code, err = score(capsys, str(crawl), "-o", str(out), "--model", str(tiny_artifact), "--precision", "fp32",
                      "--max-units-per-doc", "50")
    assert code == 0, err
    pages = {p["doc_id"]: p for p in read_jsonl(out.with_name("units.pages.jsonl"))}
    assert pages["crawl/many.txt"]["units"] == 50
    assert pages["crawl/many.txt"]["units_cap"] == {"kept": 50, "from_char": 50 * 7, "chars": 300 * 7}
    assert "kept the first 50 units" in pages["crawl/many.txt"]["warnings"][0]
    units = read_jsonl(out)
    assert sum(u["doc_id"] == "crawl/many.txt" for u in units) == 50
    assert [u["truncated"] for u in units if u["doc_id"] == "crawl/long.txt"] == [True]
    assert "1 cut to the unit cap" in err
    assert {e["doc_id"] for e in read_jsonl(out.with_name("units.errors.jsonl"))} == {"crawl/many.txt"}

    # The tokenizer never sees more than max_length * MAX_CHARS_PER_TOKEN characters of one unit.
    classifier = Classifier.from_artifact(tiny_artifact, precision="fp32")
    seen = []
    tokenizer = classifier.tokenizer

    class Spy:
        def __call__(self, texts, **kwargs):
            seen.extend(len(t) for t in texts)
            return tokenizer(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(tokenizer, name)

    classifier.tokenizer = Spy()
    # ... nor does the TF-IDF half of a fused model (the n-grams of an uncut line cost gigabytes).
    assert classifier.lexical is not None
    lexical_seen = []
    lexical = classifier.lexical.probabilities
    classifier.lexical.probabilities = lambda texts: lexical_seen.extend(len(t) for t in texts) or lexical(texts)
    short, long = classifier.predict(["发展氢能。", "氢" * 1_000_000], already_clean=True)
    assert max(seen) == classifier.max_length * MAX_CHARS_PER_TOKEN
    assert max(lexical_seen) == classifier.max_length * MAX_CHARS_PER_TOKEN
    assert long.truncated and not short.truncated


def test_documents_are_streamed(tmp_path) -> None:
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for i in range(3):
        (crawl / f"{i}.txt").write_text(f"第{i}页。", encoding="utf-8")
    stream = iter_documents([str(crawl)])
    first = next(stream)  # nothing beyond the first document has been read yet
    (crawl / "2.txt").write_text("改过了。", encoding="utf-8")
    assert first.id == "crawl/0.txt" and [d.text for d in stream] == ["第1页。", "改过了。"]


def test_precision_is_the_recorded_one_else_fp32_and_auto_decides_once(tiny_artifact, tmp_path, capsys, caplog) -> None:
    import logging

    from runtime.classifier import Classifier
    from runtime.precision import PRECISION_FILE

    caplog.set_level(logging.INFO)
    model = tmp_path / "model"
    shutil.copytree(tiny_artifact, model, ignore=shutil.ignore_patterns(PRECISION_FILE, "*.onnx", "checkpoints"))
    files = sorted(p.name for p in model.iterdir())
    crawl = Path("seeds")
    # Nothing recorded, nothing asked: fp32 with a line saying how to choose; no timing, the folder unchanged.
    plain = tmp_path / "plain" / "units.jsonl"
    code, err = score(capsys, str(crawl), "-o", str(plain), "--model", str(model))
    assert code == 0, err
    assert json.loads(plain.with_name("units.run.json").read_text())["precision"] == "fp32"
    assert "no precision is recorded" in caplog.text and "python -m serving.package" in caplog.text
    assert "precision=auto" not in caplog.text
    assert sorted(p.name for p in model.iterdir()) == files

    # An explicit auto decides once, records it, and every later default load uses the record.
    out = tmp_path / "out" / "units.jsonl"
    code, err = score(capsys, str(crawl), "-o", str(out), "--model", str(model), "--precision", "auto")
    assert code == 0, err
    recorded = json.loads((model / PRECISION_FILE).read_text())["precision"]
    assert json.loads(out.with_name("units.run.json").read_text())["precision"] == recorded
    for _ in range(2):  # every later load uses the record, not a new timing race
        again = Classifier.from_artifact(model)
        assert (again.precision, again.precision_source) == (recorded, "recorded")
    assert Classifier.from_artifact(model, precision="fp32").precision == "fp32"  # an explicit choice overrides

    other = "fp32" if recorded != "fp32" else "int8"
    lines_before = out.read_bytes()
    code, err = score(capsys, str(crawl), "-o", str(out), "--model", str(model), "--precision", other)
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ") and f"precision {recorded!r}" in message and "resume with the same" in message
    assert out.read_bytes() == lines_before
    code, err = score(capsys, str(crawl), "-o", str(out), "--model", str(model))  # the default reads the record
    assert code == 0 and "skipped 5 (already in output)" in err


def test_ray_engine_resolves_precision_by_the_same_rule(tiny_artifact, tmp_path) -> None:
    # The Ray engine fixes one precision on the driver for all actors; it must match what the
    # in-process Classifier.from_artifact picks: the record, else fp32 unless auto was asked for.
    from runtime.classifier import Classifier
    from runtime.precision import PRECISION_FILE, record_precision
    from serving.batch import resolve_precision

    model = tmp_path / "model"
    shutil.copytree(tiny_artifact, model, ignore=shutil.ignore_patterns(PRECISION_FILE, "*.onnx", "checkpoints"))
    assert resolve_precision(model, None, 64) == Classifier.from_artifact(model).precision == "fp32"
    assert not (model / PRECISION_FILE).exists()
    assert record_precision(model, {"precision": "int8", "decided_by": "test"})
    for requested in (None, "auto"):
        assert (resolve_precision(model, requested, 64)
                == Classifier.from_artifact(model, precision=requested).precision == "int8")
    assert resolve_precision(model, "fp32", 64) == "fp32"


def test_package_records_the_precision(tiny_artifact, tmp_path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    result = subprocess.run([sys.executable, "-m", "serving.package", str(tiny_artifact), "--name", "fic-precision",
                             "--precision", "fp32"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    stored = next((tmp_path / "bentoml" / "models" / "fic-precision").glob("*/"))
    assert json.loads((stored / "precision.json").read_text())["precision"] == "fp32"
    assert "precision: fp32" in (stored / "model.yaml").read_text()


SEEDS = Path(__file__).resolve().parents[2] / "seeds"


def sorted_units(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (r["doc_id"], r["index"]))


def test_parquet_output_equals_jsonl_and_survives_a_crash(tiny_artifact, tmp_path, capsys, monkeypatch) -> None:
    from serving import output
    from serving.report import load_scored

    jsonl, parquet = tmp_path / "a" / "units.jsonl", tmp_path / "b" / "units.parquet"
    common = ["--model", str(tiny_artifact), "--precision", "fp32"]
    assert score(capsys, str(SEEDS), "-o", str(jsonl), *common)[0] == 0
    monkeypatch.setattr(output, "PART_UNITS", 60)  # several parts from five pages
    assert score(capsys, str(SEEDS), "-o", str(parquet), *common)[0] == 0
    clean = output.read_units(jsonl)
    parts = sorted(parquet.glob("part-*.parquet"))
    assert len(parts) >= 3 and output.read_units(parquet) == clean
    pages = parquet.with_name("units.pages.jsonl")
    assert read_jsonl(pages) == read_jsonl(jsonl.with_name("units.pages.jsonl"))
    assert len(load_scored(parquet).units) == len(clean)  # the report reads the Parquet folder

    # A crash after the last part was renamed but before its summary lines were all written,
    # with another part still under its temporary name.
    import pyarrow.parquet as pq

    last_docs = set(pq.read_table(parts[-1], columns=["doc_id"]).column("doc_id").to_pylist())
    lines = pages.read_text(encoding="utf-8").splitlines(keepends=True)
    pages.write_text("".join(lines[:-1]) + lines[-1][:10], encoding="utf-8")
    (parquet / "part-00099.parquet.tmp").write_bytes(b"PAR1 half")
    code, err = score(capsys, str(SEEDS), "-o", str(parquet), *common)
    assert code == 0, err
    # Only the documents of the uncommitted part are scored again.
    assert f"skipped {len(lines) - len(last_docs)} (already in output)" in err
    assert not list(parquet.glob("*.tmp"))
    assert sorted_units(output.read_units(parquet)) == sorted_units(clean)
    assert (sorted(p["doc_id"] for p in read_jsonl(pages))
            == sorted(p["doc_id"] for p in read_jsonl(jsonl.with_name("units.pages.jsonl"))))


def test_file_uri_input_reads_like_a_local_folder(tiny_artifact, tmp_path, capsys) -> None:
    local, remote = tmp_path / "local.jsonl", tmp_path / "uri.jsonl"
    common = ["--model", str(tiny_artifact), "--precision", "fp32"]
    assert score(capsys, str(SEEDS), "-o", str(local), *common)[0] == 0
    code, err = score(capsys, SEEDS.as_uri() + "/", "file:///no/such/folder", "-o", str(remote), *common)
    assert code == 1 and "file:///no/such/folder: no such file or folder" in err
    strip = lambda rows: [{k: v for k, v in r.items() if k != "source"} for r in rows]  # noqa: E731
    assert read_jsonl(remote) == read_jsonl(local)
    assert (strip(read_jsonl(remote.with_name("uri.pages.jsonl")))
            == strip(read_jsonl(local.with_name("local.pages.jsonl"))))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_s3_input_over_a_local_s3_server(tiny_artifact, tmp_path, capsys, monkeypatch) -> None:
    """s3:// inputs through pyarrow.fs against moto's S3-compatible server on loopback."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        from pyarrow import fs as pafs

        s3 = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        s3.create_dir("crawls")
        for page in sorted(SEEDS.glob("*.txt")):
            with s3.open_output_stream(f"crawls/seeds/{page.name}") as handle:
                handle.write(page.read_bytes())
        with s3.open_output_stream("crawls/seeds/more/pages.jsonl") as handle:
            handle.write(json.dumps({"id": "s3-1", "text": "上海发布低空经济行动方案。"}, ensure_ascii=False).encode()
                         + b"\nnot json\n")
        query = f"?endpoint_override=127.0.0.1:{port}&scheme=http"
        local, remote = tmp_path / "local.jsonl", tmp_path / "s3.jsonl"
        common = ["--model", str(tiny_artifact), "--precision", "fp32"]
        assert score(capsys, str(SEEDS), "-o", str(local), *common)[0] == 0
        code, err = score(capsys, f"s3://crawls/seeds/{query}", f"s3://crawls/missing.txt{query}", "-o", str(remote),
                          *common)
    finally:
        server.stop()
    assert code == 1  # the missing object and the bad line fail, with their reasons
    assert "crawls/missing.txt" in err and "no such file or folder" in err and "not valid JSON" in err
    records = read_jsonl(remote)
    assert [r for r in records if r["doc_id"] != "s3-1"] == read_jsonl(local)
    assert any(r["doc_id"] == "s3-1" for r in records)
    sources = {p["doc_id"]: p["source"] for p in read_jsonl(remote.with_name("s3.pages.jsonl"))}
    assert sources[f"seeds/{sorted(SEEDS.glob('*.txt'))[0].name}"].startswith("s3://crawls/seeds/")


def test_damaged_units_are_flagged_in_both_formats_and_counted(tiny_artifact, tmp_path, capsys) -> None:
    # A page of mis-decoded lines (UTF-8 read as GBK, GBK read as Latin-1) beside a clean one.
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "clean.txt").write_text("推动氢能产业发展。\n培育商业航天。\n", encoding="utf-8")
    garbled = ["发展新质生产力。".encode().decode("gbk", "replace"), "国家发展改革委。".encode("gbk").decode("latin-1")]
    (crawl / "mojibake.txt").write_text("\n".join([*garbled, "推动氢能产业发展。"]) + "\n", encoding="utf-8")
    for out in (tmp_path / "a" / "units.jsonl", tmp_path / "b" / "units.parquet"):
        code, err = score(capsys, str(crawl), "-o", str(out), "--model", str(tiny_artifact), "--precision", "fp32")
        assert code == 0, err
        from serving.output import read_units

        flags = {(u["doc_id"], u["index"]): u["damaged"] for u in read_units(out)}
        assert flags == {("crawl/clean.txt", 0): False, ("crawl/clean.txt", 1): False, ("crawl/mojibake.txt", 0): True,
                         ("crawl/mojibake.txt", 1): True, ("crawl/mojibake.txt", 2): False}
        pages = {p["doc_id"]: p["damaged_units"] for p in read_jsonl(out.with_name("units.pages.jsonl"))}
        assert pages == {"crawl/clean.txt": 0, "crawl/mojibake.txt": 2}
        assert "of which 2 look mis-decoded (in 1 document: fetch again)" in err


def test_an_artifact_folder_without_its_weights_is_one_clear_error(tiny_artifact, tmp_path, capsys) -> None:
    import shutil

    copy = tmp_path / "no-weights"
    shutil.copytree(tiny_artifact, copy)
    (copy / "model.safetensors").unlink()
    code, err = score(capsys, "seeds", "-o", str(tmp_path / "out.jsonl"), "--model", str(copy))
    assert code == 2 and "no model weights (model.safetensors)" in err and "Traceback" not in err
