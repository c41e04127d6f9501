"""Slide files → tissue contours → patch coordinates (→ features), resumable, in TRIDENT's layout.

Job directory (TRIDENT's, plus srmil's status tables)::

    <job>/
      thumbnails/<slide>.jpg  contours/<slide>.jpg  contours_geojson/<slide>.geojson
      status_segment.csv
      <mag>x_<ps>px_<ov>px_overlap/
        patches/<slide>_patches.h5   visualization/<slide>.jpg   status_patch.csv
        features_<encoder>/<slide>.h5                             status_features_<encoder>.csv

Each stage skips a slide whose output exists and is valid for the current settings, redoes one
that is truncated or stale (patches made from other contours, or for another scan magnification
or level-0 patch size than the slide has now, e.g. after an mpp override; features from other
patches, of another encoder, precision or weights file), and never stops the cohort for one bad
slide: its row says ``failed`` with one line. The features stage is given by the caller
(``FeaturesStage``), so this layer does not import the encoders.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srmil.config import PatchConfig, TissueConfig
from srmil.errors import SrmilError, first_line
from srmil.slides.job import Claim, StatusRow, StatusTable, ensure_writable
from srmil.slides.outputs import (  # noqa: F401  (re-exported: one layout owner)
    JobLayout,
    _sha1,
    check_features,
    check_geojson,
    check_patches,
)
from srmil.slides.patching import (
    patch_grid,
    select_patches,
    write_patches,
)
from srmil.slides.readers import Slide, open_slide
from srmil.slides.tissue import (
    draw_contours,
    polygons_to_geojson,
    read_geojson,
    segment_tissue,
)
from srmil.storage import write_image, write_json

STAGES = ("segment", "patch", "features")


@dataclass(frozen=True)
class FeaturesStage:
    """The features stage: ``fn(slide, patches_h5, out_h5, overwrite) -> N`` writes ``out_h5``
    atomically (replacing an existing file, when ``overwrite``, only once the new one is
    complete).

    ``precision`` (``fp32``/``fp16``) and ``weights_sha256`` (``encoders.weights_sha256``) are
    what an existing feature file must have been made with to be kept; ``None``: not checked.
    """

    encoder: str  # folder name features_<encoder>, and the file's ``encoder`` attr
    fn: Callable[[Slide, Path, Path, bool], int]
    precision: str | None = None
    weights_sha256: str | None = None


def _redo(why: str | None) -> str:
    return "" if why == "missing" else f" (replaced: {why})"


class Pipeline:
    """Run segment / patch / features over a cohort in one job directory.

    Args:
        root: job directory.
        slides: {slide_id: slide file}.
        tissue, patch: stage settings.
        mpp: per-slide pixel-size overrides {slide_id: µm/px}.
        geojson_dir: user contours ``<dir>/<slide_id>.geojson``, used instead of segmenting.
        overwrite: redo outputs that are complete and valid.
        progress: tqdm bars on stderr (default: when stderr is a terminal).
        lock: how outputs are claimed: ``auto`` | ``flock`` | ``file`` (:mod:`srmil.locks`).
    """

    def __init__(self, root: str | os.PathLike, slides: dict[str, Path], *,
                 tissue: TissueConfig = TissueConfig(), patch: PatchConfig = PatchConfig(),
                 mpp: dict[str, float] | None = None, geojson_dir: str | os.PathLike | None = None,
                 overwrite: bool = False, progress: bool | None = None,
                 lock: str = "auto") -> None:
        self.layout = JobLayout(Path(root), patch)
        self.lock = lock
        self.slides = slides
        self.tissue = tissue
        self.patch = patch
        self.mpp = mpp or {}
        self.geojson_dir = Path(geojson_dir) if geojson_dir else None
        if self.geojson_dir is not None and not self.geojson_dir.is_dir():
            raise SrmilError("not a directory of GeoJSON contours", self.geojson_dir)
        self.overwrite = overwrite
        self.progress = sys.stderr.isatty() if progress is None else progress

    # -- stages: each returns (status, reason); status "busy" = claimed elsewhere --------------

    def _stage(self, out: Path, check: Callable[[], str | None], exists: str,
               make: Callable[[str | None], str]) -> tuple[str, str]:
        """The protocol every stage follows for its output ``out``.

        Check (``None``: valid) → skip a valid output unless ``overwrite`` → claim it (busy if
        another process holds it) → check again (that process may just have finished it) →
        ``make(why)`` writes it and says what was done (``why``: why the old one was not kept).
        """
        if check() is None and not self.overwrite:
            return "skipped", exists
        with Claim(out, mode=self.lock) as claim:
            if not claim.held:
                return "busy", f"claimed by {claim.holder() or 'another process'}"
            why = check()
            if why is None and not self.overwrite:
                return "skipped", exists
            return "done", make(why)

    def _user_geojson(self, sid: str) -> Path | None:
        if self.geojson_dir is None:
            return None
        p = self.geojson_dir / f"{sid}.geojson"
        return p if p.is_file() else None

    def _segment(self, sid: str, slide: Callable[[], Slide]) -> tuple[str, str]:
        user = self._user_geojson(sid)
        if user is not None:
            why = check_geojson(user)
            if why:
                raise SrmilError(f"user contours unusable: {why}", user)
            return "skipped", f"user contours {user}"
        out = self.layout.geojson(sid)

        def make(why: str | None) -> str:
            s = slide()
            tissue = segment_tissue(s, self.tissue)
            thumb, tds = s.thumbnail(self.tissue.thumbnail_side)
            write_image(self.layout.thumbnail(sid), thumb, overwrite=True)
            write_image(self.layout.contours(sid), draw_contours(thumb, tissue.polygons, tds),
                        overwrite=True)
            if not tissue.polygons:
                raise SrmilError("no tissue found (blank slide, or thresholds too strict)", s.path)
            write_json(out, polygons_to_geojson(tissue.polygons), overwrite=True)
            return f"{len(tissue.polygons)} tissue polygons, {tissue.fraction:.0%} of the slide"

        return self._stage(out, lambda: check_geojson(out), "contours exist", make)

    def _contours_for(self, sid: str) -> Path:
        return self._user_geojson(sid) or self.layout.geojson(sid)

    def _patch(self, sid: str, slide: Callable[[], Slide]) -> tuple[str, str]:
        contours = self._contours_for(sid)
        if not contours.is_file():
            raise SrmilError("no tissue contours; run `srmil segment` first or give --geojson",
                             contours)
        sha = _sha1(contours)
        out = self.layout.patches(sid)
        grid = patch_grid(slide(), self.patch)  # the slide as opened now (mpp override, …)

        def make(why: str | None) -> str:
            polygons = read_geojson(contours)
            if not polygons:
                raise SrmilError("no tissue polygon in the contours", contours)
            s = slide()
            coords, _, got = select_patches(s, polygons, self.patch)
            write_patches(out, coords, got, sid, self.layout.mag_dir,
                          {"min_tissue": self.patch.min_tissue, "contours_sha1": sha},
                          overwrite=True)
            thumb, tds = s.thumbnail(self.tissue.thumbnail_side)
            write_image(self.layout.visualization(sid),
                        draw_patches(thumb, coords, got.patch_size_level0, tds), overwrite=True)
            return f"{len(coords)} patches, step {got.step} px at level 0{_redo(why)}"

        return self._stage(out, lambda: check_patches(out, self.patch, sha, grid),
                           "patches exist", make)

    def _features(self, sid: str, slide: Callable[[], Slide],
                  feats: FeaturesStage) -> tuple[str, str]:
        patches = self.layout.patches(sid)
        if not patches.is_file():
            raise SrmilError("no patch file; run `srmil patch` first", patches)
        out = self.layout.features(sid, feats.encoder)

        def check() -> str | None:
            return check_features(out, patches, feats.encoder, feats.precision,
                                  feats.weights_sha256)

        def make(why: str | None) -> str:
            if why is not None:  # stale or truncated: never kept, even if the redo fails
                out.unlink(missing_ok=True)
            # a valid file (--overwrite) is replaced by the atomic rename, only on success
            n = feats.fn(slide(), patches, out, True)
            return f"{n} patches{_redo(why)}"

        return self._stage(out, check, "features exist", make)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, ids: Sequence[str], stages: Sequence[str],
            features: FeaturesStage | None = None) -> dict[str, list[StatusRow]]:
        """Run ``stages`` (in pipeline order) on ``ids``; every slide gets a row per stage.

        Returns:
            {stage: rows in slide order}; the same rows are merged into the status tables.

        Raises:
            SrmilError: the job directory cannot be written (nothing else stops the cohort).
        """
        from tqdm import tqdm

        stages = [s for s in STAGES if s in stages]
        if "features" in stages and features is None:
            raise ValueError("the features stage needs a FeaturesStage")
        ensure_writable(self.layout.root)
        if "patch" in stages or "features" in stages:
            ensure_writable(self.layout.mag_dir)
        enc = features.encoder if features else None
        tables = {s: StatusTable(self.layout.status(s, enc), self.lock) for s in stages}
        results: dict[str, list[StatusRow]] = {s: [] for s in stages}
        bar = tqdm(ids, desc=f"{'+'.join(stages)}", unit="slide", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True)
        for sid in bar:
            bar.set_postfix_str(sid)
            self._run_slide(sid, stages, features, tables, results)
        bar.close()
        return results

    def _run_slide(self, sid: str, stages: list[str], features: FeaturesStage | None,
                   tables: dict[str, StatusTable], results: dict[str, list[StatusRow]]) -> None:
        opened: list[Slide] = []

        def slide() -> Slide:
            if not opened:
                if sid not in self.slides:
                    raise SrmilError(f"no slide file for {sid!r}")
                opened.append(open_slide(self.slides[sid], mpp=self.mpp.get(sid)))
            return opened[0]

        blocked: str | None = None  # why later stages do not run
        weak_block = False
        try:
            for stage in stages:
                t0 = time.perf_counter()
                weak = False
                if blocked is not None:  # an earlier stage failed, or runs elsewhere
                    status = "skipped" if weak_block else "failed"
                    reason, weak = blocked, weak_block
                else:
                    try:
                        if stage == "segment":
                            status, reason = self._segment(sid, slide)
                        elif stage == "patch":
                            status, reason = self._patch(sid, slide)
                        else:
                            assert features is not None
                            status, reason = self._features(sid, slide, features)
                    except SrmilError as exc:
                        status, reason = "failed", first_line(str(exc))
                    except Exception as exc:  # one bad slide never stops the cohort
                        status, reason = "failed", f"{type(exc).__name__}: {first_line(str(exc))}"
                    if status == "busy":
                        status, weak = "skipped", True
                        reason = f"busy: {reason}"
                        blocked, weak_block = f"not run: {stage} busy in another process", True
                    elif status == "failed":
                        blocked, weak_block = f"not run: {stage} failed", False
                row = StatusRow(sid, status, reason, time.perf_counter() - t0)
                tables[stage].record(row, weak=weak)
                results[stage].append(row)
        finally:
            for s in opened:
                s.close()


def draw_patches(rgb: np.ndarray, coords: np.ndarray, size: int, downsample: float) -> np.ndarray:
    """Copy of a thumbnail (h, w, 3) with the patch squares outlined (TRIDENT's visualization)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(img)
    s = size / downsample
    for x, y in np.asarray(coords, dtype=np.float64) / downsample:
        draw.rectangle([x, y, x + s, y + s], outline=(255, 0, 0), width=1)
    return np.asarray(img)


def summarize(results: dict[str, list[StatusRow]]) -> dict[str, dict[str, Any]]:
    """{stage: {done, skipped, failed}} counts."""
    return {stage: {k: sum(r.status == k for r in rows) for k in ("done", "skipped", "failed")}
            for stage, rows in results.items()}
