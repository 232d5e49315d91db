import json

import pytest

from mpox_aism.bench.classifier import parse_variant
from mpox_aism.cli import main as cli


def test_variant_syntax():
    assert parse_variant("torch:cuda:fp16:channels_last:cuda_graphs") == (
        "torch", {"device": "cuda", "precision": "fp16", "channels_last": True, "cuda_graphs": True})
    assert parse_variant("onnxruntime") == ("onnxruntime", {})
    with pytest.raises(ValueError, match="not understood"):
        parse_variant("onnxruntime:fp16")
    with pytest.raises(ValueError, match="unknown backend"):
        parse_variant("tflite")


def test_bench_json(default_model, tmp_path):
    out = tmp_path / "bench.json"
    assert cli(["bench", "classifier", "--backend", "torch:cpu", "--backend", "onnxruntime", "--model",
                str(default_model), "--batch-sizes", "1,2", "--iters", "2", "--warmup", "1", "--min-seconds", "0",
                "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_count"] >= 1 and report["versions"]["torch"]
    rows = report["results"]
    assert {(r["variant"], r["batch"]) for r in rows} == {("torch:cpu", 1), ("torch:cpu", 2),
                                                         ("onnxruntime", 1), ("onnxruntime", 2)}
    for r in rows:
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["crops_per_s"] > 0 and r["precision"]
