"""``srmil heatmap``: score every patch of some slides with a run's model(s) and write, per slide,
the raw scores, a heatmap, top/bottom patch lists, QuPath GeoJSON and (with the slide) an
overlay and patch crops.

Which model scores a slide of a cross-validation run: the fold model whose TEST split held the
slide (``splits.csv``), so no slide is explained by a model that trained on it; a slide in no
fold's test split (a new slide) gets the mean of every fold model's scores; ``fold`` picks one
fold's model for all slides. Layout::

    OUT/index.csv                 one row per slide: status, kind, folds, prediction
    OUT/<slide_id>/scores.csv     patch, x, y, score, percentile (bag row order)
    OUT/<slide_id>/heatmap.png    scores on the patch grid (bag alone)
    OUT/<slide_id>/top_bottom.csv the top-k and bottom-k patches
    OUT/<slide_id>/patches.geojson  QuPath detections with the scores as measurements
    OUT/<slide_id>/overlay.png    with the slide: thumbnail and scores over it
    OUT/<slide_id>/crops/         with the slide: top_01.png…, bottom_01.png…, and crops.png
    OUT/<slide_id>/heatmap.json   what was done (written last: its presence marks the slide done)

Bad input (unreadable bag, wrong slide for the bag, unreadable slide) stops that slide with one
line; what was already written for it and for other slides stays.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srmil.bags.bag import FeatureBag
from srmil.bags.readers import find_bags
from srmil.config import HeatmapConfig
from srmil.errors import SrmilError
from srmil.reports.heatmaps import render_crops, render_heatmap, render_overlay
from srmil.reports.patch_outputs import (
    check_fits_slide,
    scores_table,
    top_bottom,
    write_geojson,
)
from srmil.reports.run_scorer import RunScorer, SlideScores, test_folds  # noqa: F401
from srmil.reports.scores import PatchScores, rank_percentile
from srmil.slides.patching import read_patch
from srmil.storage import write_csv, write_image, write_json

DONE_FILE = "heatmap.json"

log = logging.getLogger(__name__)


def _step(bag: FeatureBag) -> float:
    from srmil.graphs.grid import resolve_step

    est = resolve_step(bag)
    if est.step is not None:
        return float(est.step)
    return float(bag.patch_size_level0 or 1.0)  # a single patch: any cell size draws it


def _slide_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [SrmilError, OSError]
    try:
        import openslide

        errs.append(openslide.OpenSlideError)
    except ImportError:  # pragma: no cover - openslide-python is a dependency
        pass
    return tuple(errs)


@dataclass
class SlideResult:
    slide_id: str
    status: str  # done | skipped | failed
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def heatmap_slide(
    out_dir: Path, scored: SlideScores, classes: list[str], cfg: HeatmapConfig = HeatmapConfig(),
    slide_path: Path | None = None, model: str = "", mpp: float | None = None,
    made_by: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one slide's outputs (see the module doc); ``heatmap.json`` last.

    A slide directory without ``heatmap.json`` is unfinished: its files are replaced. The
    caller skips finished slides (or passes them on ``--overwrite``).

    Raises:
        SrmilError: the slide does not fit the bag or cannot be read. The bag-only outputs are
            already written by then and stay.
    """
    bag, ps = scored.bag, scored.scores
    coords = np.asarray(bag.coords, dtype=np.float64)
    step = _step(bag)
    size = float(bag.patch_size_level0 or step)
    pct = rank_percentile(ps.scores)
    table = scores_table(bag.coords, ps.scores, pct)
    sid = out_dir.name
    what = ps.kind if ps.target is None else f"{ps.kind} (class {classes[ps.target]})"
    if scored.task is None:
        pred = int(np.argmax(scored.probs))
        said = f"predicted {classes[pred]} (p = {scored.probs[pred]:.2f})"
        prediction = {"pred": classes[pred], **{f"prob_{c}": float(p) for c, p in
                                                zip(classes, scored.probs, strict=True)}}
    else:  # survival: risk (and survival per bin); regression: the value
        said = scored.task.describe(scored.probs)
        prediction = {"pred": float(scored.probs[0])}
        of = "the risk" if scored.task.name == "survival" else "the predicted value"
        # a gradient is taken of the risk (value); attention is what the model pooled for it
        what += f" of {of}" if ps.kind != "attention" else f" (predicting {of})"
    who = sid if scored.case is None or scored.case_slides == [sid] else (
        f"{sid} (case {scored.case}, {len(scored.case_slides)} slides)")
    title = f"{who}: {said}\n{model} {what}, {scored.rule}"
    files = {"scores": "scores.csv", "heatmap": "heatmap.png", "top_bottom": "top_bottom.csv"}
    overwrite = True  # see the docstring: only heatmap.json marks finished work
    write_csv(out_dir / "scores.csv", table, overwrite)
    render_heatmap(out_dir / "heatmap.png", coords, ps.scores, step, norm=cfg.norm,
                   kind=ps.kind, title=title, cmap=cfg.cmap, max_side=cfg.max_side,
                   unit=bag.coord_unit, overwrite=overwrite)
    tb = top_bottom(table, cfg.top_k)
    info: dict[str, Any] = {
        "slide_id": sid, "bag": str(bag.source), "patches": bag.n_patches, "kind": ps.kind,
        "target_class": None if ps.target is None else classes[ps.target],
        "folds": scored.folds, "rule": scored.rule, **prediction,
        "norm": cfg.norm, "step": step, "patch_size_level0": size, "unit": bag.coord_unit,
        "slide": None if slide_path is None else str(slide_path), "title": title,
    }
    if scored.case is not None:  # patient-level run: the prediction is the case's
        info["case_id"] = scored.case
        info["case_slides"] = ";".join(scored.case_slides)
    if cfg.geojson and bag.coord_unit == "px":
        write_geojson(out_dir / "patches.geojson", coords, size,
                      {"score": ps.scores, "score_percentile": pct}, name=sid,
                      overwrite=overwrite)
        files["geojson"] = "patches.geojson"
    write_csv(out_dir / "top_bottom.csv", tb, overwrite)  # stays if the slide then fails
    if slide_path is not None:
        tb["crop"] = ""
        files.update(_slide_outputs(out_dir, slide_path, bag, coords, ps, tb, step, size, cfg,
                                    title, overwrite, mpp))
        write_csv(out_dir / "top_bottom.csv", tb, overwrite)  # now with the crops' files
    if cfg.geojson and bag.coord_unit != "px" and slide_path is None:
        info["geojson_skipped"] = "coordinates in µm: give the slide (--slides) for pixels"
    info["files"] = files
    info["made_by"] = made_by or {}
    write_json(out_dir / DONE_FILE, info, overwrite)
    return info


def _open_slide(slide_path: Path, unit: str, mpp: float | None) -> Any:
    """Open the slide for drawing. Pixel coordinates need no pixel size, so a slide that lacks
    one still opens (with a placeholder that nothing uses); any other failure is one line."""
    from srmil.slides.readers import open_slide

    try:
        try:
            return open_slide(slide_path, mpp=mpp)
        except SrmilError as first:
            if unit != "px" or mpp is not None:
                raise
            try:
                return open_slide(slide_path, mpp=1.0)
            except SrmilError:
                raise first from None
    except _slide_errors() as exc:
        if isinstance(exc, SrmilError):
            raise
        raise SrmilError(f"cannot read the slide: {exc}", slide_path) from None


def _slide_outputs(out_dir: Path, slide_path: Path, bag: FeatureBag, coords: np.ndarray,
                   ps: PatchScores, tb: pd.DataFrame, step: float, size: float,
                   cfg: HeatmapConfig, title: str, overwrite: bool,
                   mpp: float | None = None) -> dict[str, str]:
    slide = _open_slide(slide_path, bag.coord_unit, mpp)
    return _draw_on_slide(slide, out_dir, slide_path, bag, coords, ps, tb, step, size, cfg,
                          title, overwrite)


def _draw_on_slide(slide: Any, out_dir: Path, slide_path: Path, bag: FeatureBag,
                   coords: np.ndarray, ps: PatchScores, tb: pd.DataFrame, step: float,
                   size: float, cfg: HeatmapConfig, title: str,
                   overwrite: bool) -> dict[str, str]:
    files: dict[str, str] = {}
    try:
        scale = 1.0
        if bag.coord_unit == "um":  # STAMP: micrometres → level-0 pixels
            scale = 1.0 / float(slide.mpp)
        cpx, step_px, size_px = coords * scale, step * scale, size * scale
        check_fits_slide(cpx, tuple(slide.dimensions), slide_path, bag.source)
        thumb, per_px = slide.thumbnail(cfg.thumb_side)
        render_overlay(out_dir / "overlay.png", thumb, float(per_px), cpx, ps.scores, step_px,
                       norm=cfg.norm, kind=ps.kind, title=title, cmap=cfg.cmap,
                       alpha=cfg.alpha, max_side=cfg.max_side, overwrite=overwrite)
        files["overlay"] = "overlay.png"
        if bag.coord_unit == "um" and cfg.geojson:
            write_geojson(out_dir / "patches.geojson", cpx, size_px,
                          {"score": ps.scores, "score_percentile": rank_percentile(ps.scores)},
                          name=out_dir.name, overwrite=overwrite)
            files["geojson"] = "patches.geojson"
        crops: dict[str, list] = {"top": [], "bottom": []}
        vals: dict[str, list] = {"top": [], "bottom": []}
        for i, row in tb.iterrows():
            xy = (int(round(row["x"] * scale)), int(round(row["y"] * scale)))
            img = read_patch(slide, xy, int(round(size_px)), cfg.crop_px)  # (c, c, 3)
            name = f"crops/{row['group']}_{int(row['rank']):02d}.png"
            write_image(out_dir / name, img, overwrite)
            tb.loc[i, "crop"] = name
            crops[row["group"]].append(img)
            vals[row["group"]].append(f"{row['score']:.3g} at ({row['x']:g}, {row['y']:g})")
        if len(tb):
            render_crops(out_dir / "crops" / "crops.png", crops["top"], crops["bottom"],
                         vals["top"], vals["bottom"], ps.kind, overwrite)
            files["crops"] = "crops/crops.png"
    except _slide_errors() as exc:
        if isinstance(exc, SrmilError):
            raise
        raise SrmilError(f"cannot read the slide: {exc}", slide_path) from None
    finally:
        slide.close()
    return files


def _find_slides(slides: str | os.PathLike | Mapping[str, Path] | None) -> dict[str, Path]:
    if slides is None:
        return {}
    if isinstance(slides, Mapping):
        return {str(k): Path(v) for k, v in slides.items()}
    from srmil.slides.job import resolve_slides

    return resolve_slides(slides)[0]


def heatmap_run(
    run_dir: str | os.PathLike, bags: str | os.PathLike, out: str | os.PathLike,
    slides_dir: str | os.PathLike | Mapping[str, Path] | None = None,
    slide_ids: list[str] | None = None,
    fold: int | None = None, cfg: HeatmapConfig = HeatmapConfig(), overwrite: bool = False,
    progress: bool = True, scorer: RunScorer | None = None,
    mpp: dict[str, float] | None = None,
) -> list[SlideResult]:
    """Heatmaps of the given slides (default: every bag) with a run's model(s).

    A slide whose ``heatmap.json`` exists is skipped unless ``overwrite``, provided it was made
    by the same run (its ``config.json`` and fold weights unchanged) with the same settings;
    one made otherwise is refused (failed, one line), never silently kept or replaced. Failures
    are collected, logged as one line each, and the other slides go on. ``slides_dir``: a
    directory of slide files, a slide list (as ``srmil extract --slides``) or {slide_id: path}.
    ``mpp``: {slide_id: µm/px} for slides whose files lack a pixel size (needed for µm
    coordinates).

    Returns:
        One :class:`SlideResult` per slide; ``OUT/index.csv`` lists every finished slide in
        ``out`` and this call's failures.
    """
    from tqdm import tqdm

    from srmil.slides.job import ensure_writable

    out = ensure_writable(out)
    found = every = find_bags(bags)
    if slide_ids:
        missing = [s for s in slide_ids if s not in found]
        if missing:
            raise SrmilError(f"no bag for slide(s) {', '.join(missing[:5])}"
                             + (" …" if len(missing) > 5 else ""), bags)
        found = {s: found[s] for s in slide_ids}
    slides = _find_slides(slides_dir)
    scorer = scorer or RunScorer(run_dir, fold, cfg.method)
    made_by = provenance(run_dir, fold, cfg)
    results = []
    for sid, path in tqdm(found.items(), desc="heatmap", unit="slide", leave=False,
                          disable=None if progress and log.isEnabledFor(logging.INFO) else True,
                          file=sys.stderr):
        d = out / sid
        if (d / DONE_FILE).exists() and not overwrite:
            other = _made_by(d / DONE_FILE)
            if other == made_by:
                results.append(SlideResult(sid, "skipped"))
                continue
            err = str(SrmilError("done by another run or with other settings "
                                 f"({_difference(other, made_by)}); use another --out, or "
                                 "--overwrite to replace it", d / DONE_FILE))
            log.error("%s", err)
            results.append(SlideResult(sid, "failed", error=err))
            continue
        (d / DONE_FILE).unlink(missing_ok=True)  # --overwrite: the slide is unfinished again
        if slides_dir is not None and sid not in slides:
            log.warning("no slide file for %s in %s: bag-only outputs (no overlay, no crops)",
                        sid, slides_dir if not isinstance(slides_dir, Mapping) else "--slides")
        try:
            scored = scorer.score(path, sid, every)  # a case's other slides too
            info = heatmap_slide(d, scored, scorer.classes, cfg, slides.get(sid),
                                 scorer.model_name, (mpp or {}).get(sid), made_by)
            results.append(SlideResult(sid, "done", info))
        except SrmilError as exc:
            log.error("%s", exc)
            results.append(SlideResult(sid, "failed", error=str(exc)))
    write_index(out, results, overwrite=True)
    return results


def provenance(run_dir: str | os.PathLike, fold: int | None,
               cfg: HeatmapConfig) -> dict[str, Any]:
    """What made a slide's heatmap: the run (path, a hash of its ``config.json``, the size and
    time of each fold's weights), the fold choice and the heatmap settings."""
    import dataclasses
    import hashlib

    from srmil.training.rundir import RunDir

    rd = RunDir(Path(run_dir).resolve())
    run, config = rd.path, rd.config_path
    weights = sorted(rd.fold_dir(k) / rd.BEST for k in rd.folds()
                     if (rd.fold_dir(k) / rd.BEST).exists())
    if not weights and (run / rd.BEST).exists():
        weights = [run / rd.BEST]
    return {
        "run": str(run),
        "config_sha1": hashlib.sha1(config.read_bytes()).hexdigest() if config.exists() else "",
        "weights": [f"{w.relative_to(run)}:{w.stat().st_size}:{w.stat().st_mtime_ns}"
                    for w in weights],
        "fold": fold,
        "settings": {k: v for k, v in dataclasses.asdict(cfg).items()},
    }


def _made_by(done: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(done.read_text()).get("made_by")
    except (OSError, ValueError, AttributeError):
        return None


def _difference(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    if not old:
        return "no record of what made it"
    keys = [k for k in new if old.get(k) != new[k]]
    if "settings" in keys:
        keys.remove("settings")
        keys += [f"settings.{k}" for k in new["settings"]
                 if (old.get("settings") or {}).get(k) != new["settings"][k]]
    return "differs in " + ", ".join(keys)


def write_index(out: Path, results: list[SlideResult], overwrite: bool = True) -> Path:
    """``OUT/index.csv``: every finished slide in ``out`` plus this call's failures."""
    import json

    rows = []
    for p in sorted(out.glob(f"*/{DONE_FILE}")):
        info = json.loads(p.read_text())
        rows.append({"slide_id": info["slide_id"], "status": "done",
                     **{k: v for k, v in info.items()
                        if k not in ("slide_id", "files", "bag", "slide", "title")},
                     "folds": ",".join(map(str, info.get("folds", []))), "error": ""})
    done = {r["slide_id"] for r in rows}
    rows += [{"slide_id": r.slide_id, "status": "failed", "error": r.error}
             for r in results if r.status == "failed" and r.slide_id not in done]
    out.mkdir(parents=True, exist_ok=True)
    return write_csv(out / "index.csv", pd.DataFrame(rows), overwrite=overwrite)
