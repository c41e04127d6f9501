"""``srmil bench step`` runs end to end on tiny bags (figures are printed, never asserted)."""

from __future__ import annotations

import json

import pytest

from srmil.bench_step import bench_step, format_step_table, raster_coords
from srmil.config import StepBenchConfig


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from srmil.cli.main import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_raster_coords_are_sorted_rows_of_a_grid():
    c = raster_coords(300)
    assert len({tuple(r) for r in c.tolist()}) == 300
    key = c[:, 1] * 10**9 + c[:, 0]
    assert (key[1:] > key[:-1]).all()  # row by row, left to right
    assert (c % 448 == 0).all()


def test_bench_step_measures_every_config_in_its_own_process():
    cfg = StepBenchConfig(sizes=(40, 60), dim=8, small_dim=4, repeats=1,
                          models=("srmil (pyg, faithful)", "mean"), faithful_up_to=50)
    res = bench_step(cfg)
    rows = {(r["label"], r["n"]): r for r in res["rows"]}
    # the faithful path stops at faithful_up_to; every other config runs at every size
    assert set(rows) == {("srmil (pyg, faithful)", 40), ("mean", 40), ("mean", 60)}
    for r in rows.values():
        assert "error" not in r, r
        assert r["step_s"] > 0 and r["infer_s"] > 0 and r["dim"] == (4 if r["n"] == 40 else 8)
        assert r["step_peak_mb"] >= 0 and r["infer_peak_mb"] >= 0
    assert rows[("srmil (pyg, faithful)", 40)]["flops"] > 0 and "flops" not in rows[("mean", 60)]
    assert [io["n"] for io in res["io"]] == [40, 60] and res["io"][1]["edges"] > 60
    table = format_step_table(res)
    assert "srmil (pyg, faithful)" in table and "vs faithful" in table and "GFLOP" in table


def test_cli_bench_step_prints_and_saves(tmp_path, capsys):
    out = tmp_path / "step.json"
    code, text, _ = run_cli(capsys, "bench", "step", "--sizes", "30", "--dim", "4", "--models",
                            "mean", "--repeats", "1", "--out", str(out))
    assert code == 0
    assert "mean" in text and str(out) in text
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["label"] == "mean" and saved["rows"][0]["n"] == 30


def test_cli_bench_step_rejects_bad_sizes(capsys):
    code, _, err = run_cli(capsys, "bench", "step", "--sizes", "10,x")
    assert code != 0 and "--sizes" in err and "Traceback" not in err


def test_cli_bench_step_without_a_gpu_is_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(capsys, "bench", "step", "--device", "cuda", "--sizes", "10")
    assert code != 0 and "no CUDA device" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_memory_options_run_only_when_named():
    from srmil.bench_step import OPTION_VARIANTS, _configs

    assert not {c[0] for c in OPTION_VARIANTS} & {c[0] for c in _configs(StepBenchConfig())}
    named = _configs(StepBenchConfig(models=("srmil (grid)", "srmil (grid) +crop 2048")))
    assert [c[0] for c in named] == ["srmil (grid)", "srmil (grid) +crop 2048"]
    assert named[1][2]["train_crop"] == 2048


def test_flops_count_inplace_products():
    """The grid path accumulates gradients with in-place ``addmm_``, which torch's own table
    skips; ``count_flops`` counts it like any product."""
    import torch

    from srmil.bench_step import count_flops

    a, b, c = torch.randn(64, 32), torch.randn(32, 16), torch.zeros(64, 16)
    assert count_flops(lambda: c.addmm_(a, b)) == 2 * 64 * 32 * 16
    assert count_flops(lambda: (a @ b, c.addmm_(a, b))) == 2 * 2 * 64 * 32 * 16
