"""Smoke run of experiments/bench_data.py on the offline digits (timings are reported, never asserted)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "experiments" / "bench_data.py"


def test_bench_data_smoke(offline, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_data", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    record = bench.main(["--smoke", "--no-download", "--data-root", offline["root"], "--out", str(out)])
    assert json.loads(out.read_text()) == record
    assert record["scattered_48x48"]["num_scenes"] == 50
    assert set(record["generators_ms_per_scene"]) >= {"scattered", "cluttered", "shapes"}
    assert json.loads(capsys.readouterr().out) == record
