"""``srmil bench step``: time and peak memory of one training step and of inference, per model.

Each (model, size) runs in a fresh subprocess so that its peak memory is its own: the growth of
the process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` before each stage)
over its RSS once the bag and the model are built (on a GPU, the growth of
``torch.cuda.max_memory_allocated``). Times are medians of repeats after one warm-up step;
ratios are taken within one run. The bag is a tissue-like grid (60 % of a square filled, holes
and a ragged edge) in raster order, as TRIDENT and CLAM write patches, with random float32
features. Benchmarks print figures; tests never time anything.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from srmil.config import StepBenchConfig

log = logging.getLogger(__name__)

# (label, registered model, config overrides): SRMIL's paths first, then every other model
SRMIL_VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("srmil (pyg, faithful)", "srmil", {"backend": "pyg"}),
    ("srmil (grid)", "srmil", {"backend": "grid"}),
    ("srmil (grid, eager kernels)", "srmil", {"backend": "grid", "kernels": "eager"}),
)
# SRMIL's memory options, run only when named in ``models`` (by label)
OPTION_VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("srmil (grid) +checkpoint", "srmil", {"backend": "grid", "checkpoint": True}),
    ("srmil (grid) +shared proj", "srmil", {"backend": "grid", "share_projection": True}),
    ("srmil (grid) +crop 8192", "srmil", {"backend": "grid", "train_crop": 8192}),
    ("srmil (grid) +crop 2048", "srmil", {"backend": "grid", "train_crop": 2048}),
)


def raster_coords(n: int, step: int = 448, seed: int = 0) -> np.ndarray:
    """Tissue-like grid coordinates (:func:`srmil.bench.tissue_like_coords`) in raster order."""
    from srmil.bench import tissue_like_coords

    c = tissue_like_coords(n, step, seed)
    return c[np.lexsort((c[:, 0], c[:, 1]))]


def _rss_mb() -> float:
    """Current RSS (Linux ``/proc``); elsewhere the peak so far, so growth reads low."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak RSS since the last reset (``VmHWM``), else since the process started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e3  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # Linux: KiB


def _median_time(fn, repeats: int, sync) -> tuple[float, float]:
    """(median seconds of ``repeats`` calls after one warm-up, the warm-up's seconds)."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), first


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one (model, size) in this process; the subprocess side of :func:`bench_step`."""
    import torch

    from srmil.bags.bag import FeatureBag
    from srmil.graphs.graph_bag import to_graph_bag
    from srmil.models.base import create_model

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    n, d, device = int(spec["n"]), int(spec["dim"]), spec["device"]
    rng = np.random.default_rng(0)
    coords = raster_coords(n)
    fb = FeatureBag(features=rng.standard_normal((n, d), dtype=np.float32), coords=coords,
                    slide_id="bench", source=Path("bench.h5"), reader="bench",
                    patch_size_level0=448, step=448)
    torch.manual_seed(0)
    net = create_model(spec["model"], d, 2, spec["overrides"]).to(device)
    bag = to_graph_bag(fb, y=1, with_graph=net.uses_graph).to(device)
    del fb
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_dev = torch.cuda.memory_allocated()
    out: dict[str, Any] = {"label": spec["label"], "model": spec["model"], "n": n, "dim": d,
                           "peak_reset": _reset_peak_rss()}
    base = _rss_mb()

    net.eval()

    def infer():
        with torch.inference_mode():
            net(bag)

    out["infer_s"], _ = _median_time(infer, spec["repeats"], sync)
    out["infer_peak_mb"] = max(_peak_rss_mb() - base, 0.0)
    _reset_peak_rss()
    base = _rss_mb()
    if cuda:
        out["infer_peak_mb"] = (torch.cuda.max_memory_allocated() - base_dev) / 1e6
        torch.cuda.reset_peak_memory_stats()

    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=1e-5)
    target = torch.tensor(1, device=device)

    def step():
        parts = net.loss(bag, target)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()

    out["step_s"], out["first_step_s"] = _median_time(step, spec["repeats"], sync)
    out["step_peak_mb"] = max(_peak_rss_mb() - base, 0.0)
    if cuda:
        out["step_peak_mb"] = (torch.cuda.max_memory_allocated() - base_dev) / 1e6
    if spec.get("flops"):
        out["flops"] = count_flops(step)
    return out


def _addmm_flops(_self, a, b, *args, **kwargs) -> int:  # shapes, as the counter passes them
    return 2 * a[0] * a[1] * b[1]


def count_flops(fn) -> int:
    """Matrix-product FLOPs of ``fn()`` (torch ``FlopCounterMode``), in-place ``addmm_``
    included: the grid path accumulates gradients with it and torch's table skips it."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False,
                         custom_mapping={torch.ops.aten.addmm_: _addmm_flops}) as fc:
        fn()
    return int(fc.get_total_flops())


def matmul_peak(device: str = "cpu", n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of an n×n float32 ``torch.mm`` in this process (median of ``repeats``)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    s, _ = _median_time(lambda: torch.mm(a, b), repeats, sync)
    return 2 * n**3 / s


def bag_io(n: int, dim: int) -> dict[str, float]:
    """Seconds to read an (n, dim) float16 TRIDENT bag, build its graph and neighbour table."""
    from srmil.bags.readers import read_bag
    from srmil.bags.writer import write_trident_bag
    from srmil.config import GraphConfig
    from srmil.graphs.grid import build_graph
    from srmil.graphs.neighbours import build_neighbour_table

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="srmil-bench-") as tmp:
        path = write_trident_bag(Path(tmp) / "bench.h5",
                                 rng.standard_normal((n, dim)).astype(np.float16),
                                 raster_coords(n), patch_size=224, level0_magnification=40,
                                 target_magnification=20, overlap=0, encoder="bench")
        t0 = time.perf_counter()
        bag = read_bag(path)
        read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = build_graph(bag, GraphConfig())
    graph_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_neighbour_table(graph.edge_index, n)
    table_s = time.perf_counter() - t0
    return {"n": n, "dim": dim, "read_s": read_s, "graph_s": graph_s, "table_s": table_s,
            "edges": int(graph.edge_index.shape[1])}


def _configs(cfg: StepBenchConfig) -> list[tuple[str, str, dict[str, Any]]]:
    from srmil.models.base import MODELS

    everything = [*SRMIL_VARIANTS, *((m, m, {}) for m in MODELS.names() if m != "srmil")]
    if not cfg.models:
        return everything
    named = [c for c in everything if c[0] in cfg.models or c[1] in cfg.models]
    return named + [c for c in OPTION_VARIANTS if c[0] in cfg.models]


def _spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="srmil-bench-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "srmil.bench_step", json.dumps(spec), str(result)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**spec, "error": f"over {timeout:g} s"}
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {**spec, "error": f"exit {proc.returncode}: {tail}"}
        return json.loads(result.read_text())


def bench_step(cfg: StepBenchConfig = StepBenchConfig()) -> dict[str, Any]:
    """Run every config of ``cfg`` and return the figures (the CLI prints and saves them).

    Returns:
        ``{"machine", "threads", "device", "matmul_flops", "io": [...], "rows": [...]}``;
        each row has ``step_s``, ``step_peak_mb``, ``infer_s``, ``infer_peak_mb`` (and
        ``flops`` for SRMIL), or ``error``.
    """
    import torch

    from srmil.errors import ConfigError

    if cfg.device not in ("cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"bench step --device: choose cpu or cuda[:i], got {cfg.device!r}")
    if cfg.device != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"bench step --device {cfg.device}: no CUDA device is available here")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    result: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "threads": cfg.threads or torch.get_num_threads(),
        "device": (torch.cuda.get_device_name(0) if cfg.device.startswith("cuda")
                   else "cpu"),
        "torch": torch.__version__, "repeats": cfg.repeats,
        "matmul_flops": matmul_peak(cfg.device), "io": [], "rows": [],
    }
    for i, n in enumerate(cfg.sizes):
        dim = cfg.small_dim if i == 0 and len(cfg.sizes) > 1 else cfg.dim
        result["io"].append(bag_io(n, dim))
        for label, model, overrides in _configs(cfg):
            if overrides.get("backend") == "pyg" and n > cfg.faithful_up_to:
                continue
            spec = {"label": label, "model": model, "overrides": overrides, "n": n,
                    "dim": dim, "repeats": cfg.repeats, "device": cfg.device,
                    "threads": cfg.threads, "flops": model == "srmil"}
            log.info("bench step: %s, N=%d, D=%d", label, n, dim)
            result["rows"].append(_spawn(spec, cfg.timeout_s))
    return result


def format_step_table(result: dict[str, Any]) -> str:
    """The figures of :func:`bench_step` as the text table the CLI prints."""
    peak = result["matmul_flops"]
    lines = [
        f"one training step (forward, backward, AdamW) and one inference per bag; median of "
        f"{result['repeats']} after a warm-up; {result['device']} ({result['machine']}, "
        f"{result['cpus']} CPUs, torch {result['torch']}, {result['threads']} threads); "
        f"float32 4096² mm peak {peak / 1e9:.0f} GFLOP/s; peak = growth of peak "
        f"{'device memory' if result['device'] != 'cpu' else 'RSS'} over the built bag + model",
        "",
        f"{'patches':>8} {'D':>5} {'bag read s':>10} {'graph s':>8} {'table s':>8} {'edges':>10}",
    ]
    for r in result["io"]:
        lines.append(f"{r['n']:>8,} {r['dim']:>5} {r['read_s']:>10.3f} {r['graph_s']:>8.3f} "
                     f"{r['table_s']:>8.3f} {r['edges']:>10,}")
    lines += ["", f"{'patches':>8} {'D':>5} {'model':<28} {'step s':>8} {'peak MB':>8} "
              f"{'MB/patch':>8} {'infer s':>8} {'infer MB':>8} {'vs faithful':>11} "
              f"{'GFLOP':>7} {'% peak':>6}"]
    faithful = {r["n"]: r["step_s"] for r in result["rows"]
                if r.get("label") == SRMIL_VARIANTS[0][0] and "step_s" in r}
    for r in result["rows"]:
        head = f"{r['n']:>8,} {r['dim']:>5} {r['label']:<28}"
        if "error" in r:
            lines.append(f"{head} {r['error']}")
            continue
        ratio = (f"{faithful[r['n']] / r['step_s']:>10.1f}×" if r["n"] in faithful
                 else f"{'-':>11}")
        flops = (f"{r['flops'] / 1e9:>7.1f} {100 * r['flops'] / r['step_s'] / peak:>5.0f}%"
                 if r.get("flops") else f"{'-':>7} {'-':>6}")
        lines.append(
            f"{head} {r['step_s']:>8.3f} {r['step_peak_mb']:>8.0f} "
            f"{r['step_peak_mb'] / r['n']:>8.3f} {r['infer_s']:>8.3f} {r['infer_peak_mb']:>8.0f} "
            f"{ratio} {flops}")
    return "\n".join(lines)


if __name__ == "__main__":  # the worker: one config (JSON), its figures to a JSON file
    from srmil.storage import write_json

    logging.basicConfig(level=logging.WARNING)
    write_json(sys.argv[2], run_worker(json.loads(sys.argv[1])), overwrite=True)
