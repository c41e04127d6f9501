"""The built-in synthetic cohorts: TRIDENT-layout h5 bags + a labels CSV, made from a seed.

A family of known-truth cohorts. Each slide is an irregular tissue region (holes and islands
included) on a grid. Patch features are ``prototype[tissue type] + noise``, with tissue types in
spatially coherent regions (the nuisance: ``tissue_spread``, kept orthogonal to the tumour
direction), and a shared "tumour" direction of norm ``tumour_shift`` added to the tumour-like
patches. What carries the label is the variant's signal kind:

- ``spatial`` (arrangement only): every slide has the same share of tumour-like patches; in
  ``clustered`` slides they form one compact focus, in ``scattered`` slides they are spread at
  random. The instances have one distribution in both classes, so a model that ignores space
  sits at chance.
- ``instance``: ``tumour`` slides have tumour-like patches (clustered or scattered), ``normal``
  slides have none, so patch content alone decides.
- ``mixed`` (contiguous lesions plus isolated look-alikes, CAMELYON-like): ``tumour`` slides
  have one compact lesion (``tumour_fraction``, 3–8 % by default); *every* slide, of both
  classes, also has isolated look-alike patches (``lookalike_fraction``, 2–16 %) with the same
  shift, none touching another or the lesion. The look-alikes' share varies as much as the
  lesion's, so counting tumour-like patches separates the classes only in part (as benign
  mimics and isolated tumour cells blur counts on lymph-node slides); knowing that a lesion is
  contiguous separates them fully.
- ``sparse`` (isolated instances): ``tumour`` slides hold a few isolated tumour-like patches
  (``tumour_fraction``, 1–6 % by default; at least one) with a weak shift (2σ), no two of them
  8-adjacent; ``normal`` slides have none. There is no spatial structure to find: a model must
  spot rare patches (micro-metastases, isolated tumour cells).
- ``survival`` / ``regression``: every slide has the same share of tumour-like patches; a
  patient-level score ρ ~ U(0, 1) is the share of them gathered in one compact focus (the rest
  scattered), i.e. the relative size of the largest cluster. Survival: event time exponential
  with log-hazard ``effect · z`` (z = ρ standardised) and uniform random censoring tuned to
  ``censoring``; regression: ``target = effect · z + target_noise · N(0, 1)``. Patch content is
  the same whatever ρ, so only a model that sees the arrangement can beat chance.

Isolated patches (``mixed`` look-alikes, ``sparse`` tumour) are drawn at random among the cells
of one of the four parity sub-lattices of the grid (even/odd x, even/odd y, chosen per slide)
that do not touch a lesion: two such cells are never 8-adjacent, whatever the share asked for
(up to a quarter of the tissue; beyond what fits, fewer are placed).

``tumour_fraction`` and ``tumour_shift`` left at ``None`` take the variant's defaults
(:data:`srmil.config.SYNTH_VARIANT_DEFAULTS`); ``spatial``, ``instance`` and ``survival`` keep
their original defaults, so their cohorts are the same for every seed as before the family grew.
``regression`` was recalibrated: a fixed 15 % tumour-like share whose scattered part is
isolated, so the focus size is the score itself (not score × a varying load) and chance
clusters of the scattered patches do not blur it (README, Survival and regression).

Calibration: with a tissue-type spread that is large against the tumour shift, no learned model
beats chance even though an oracle does; the defaults keep the shift (3σ along one direction)
well above the tissue variation (1σ) so the cohort is learnable. :func:`oracle` reports what an
oracle reaches (AUCs): knowing which patches are tumour-like (their share), knowing their
arrangement (the tumour neighbour share of the true tumour-like patches, count-free), and
knowing what tumour looks like but not where (the bag's likelihood ratio along the true
direction): the ceilings of an instance-level, a spatial and a content-only model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from srmil.bags.writer import trident_dir, write_trident_bag
from srmil.config import SynthConfig, to_dict
from srmil.errors import ConfigError, SrmilError
from srmil.storage import write_csv, write_json

VARIANT_CLASSES = {"spatial": ("clustered", "scattered"), "instance": ("normal", "tumour"),
                   "mixed": ("normal", "tumour"), "sparse": ("normal", "tumour"),
                   "survival": ("censored", "event"), "regression": ()}
CONTINUOUS = ("survival", "regression")  # a patient-level score ρ drives the outcome
ENCODER_NAME = "synth"


@dataclass
class SyntheticSlide:
    """One generated slide: cells (N, 2) grid cells, features (N, D), tumour mask (N,)."""

    slide_id: str
    case_id: str
    label: str
    cells: np.ndarray
    features: np.ndarray
    tumour: np.ndarray
    level0_magnification: int
    score: float = 0.0  # survival / regression: the patient's ρ (share of tumour in one focus)


def _tissue_cells(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2) distinct grid cells forming an irregular tissue region with holes."""
    side = int(math.ceil(math.sqrt(n / 0.45))) + 4
    field = ndimage.gaussian_filter(rng.standard_normal((side, side)), sigma=side / 8)
    yy, xx = np.mgrid[0:side, 0:side]
    r = np.hypot(xx - side / 2, yy - side / 2) / (side / 2)
    field = field / (field.std() + 1e-9) - 1.5 * r  # mostly one blob, ragged edges, some holes
    order = np.argsort(-field.ravel(), kind="stable")[:n]
    return np.stack([order % side, order // side], axis=1).astype(np.int64)


def _tissue_types(rng: np.random.Generator, cells: np.ndarray, k: int) -> np.ndarray:
    """(N,) tissue type per cell, in spatially coherent regions (argmax of smooth fields)."""
    side = int(cells.max()) + 1
    fields = np.stack([
        ndimage.gaussian_filter(rng.standard_normal((side, side)), sigma=max(side / 6, 1.0))
        for _ in range(k)
    ])
    return fields[:, cells[:, 1], cells[:, 0]].argmax(axis=0)


def _clustered(rng: np.random.Generator, cells: np.ndarray, m: int) -> np.ndarray:
    """Boolean mask of the m cells nearest a random tissue cell: one compact focus."""
    centre = cells[rng.integers(len(cells))].astype(np.float64)
    d = np.hypot(*(cells - centre).T) + rng.uniform(0, 0.5, len(cells))  # ragged border
    mask = np.zeros(len(cells), dtype=bool)
    mask[np.argsort(d, kind="stable")[:m]] = True
    return mask


def _scattered(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=m, replace=False)] = True
    return mask


def _near(cells: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N,) True where a cell is in ``mask`` or 8-adjacent to a cell in it."""
    if not mask.any():
        return np.zeros(len(cells), dtype=bool)
    lo = cells.min(axis=0) - 1
    c = cells - lo
    grid = np.zeros(tuple((c.max(axis=0) + 2).tolist()), dtype=bool)
    grid[c[mask, 0], c[mask, 1]] = True
    grown = ndimage.binary_dilation(grid, structure=np.ones((3, 3), dtype=bool))
    return grown[c[:, 0], c[:, 1]]


def _isolated(rng: np.random.Generator, cells: np.ndarray, m: int,
              avoid: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of up to m cells, no two 8-adjacent and none touching ``avoid``.

    Drawn among the cells of one parity sub-lattice (random per slide): any two of its cells
    differ by 2 or more in x or y.
    """
    ox, oy = rng.integers(0, 2, size=2)
    ok = ((cells[:, 0] + ox) % 2 == 0) & ((cells[:, 1] + oy) % 2 == 0)
    if avoid is not None:
        ok &= ~_near(cells, avoid)
    free = np.flatnonzero(ok)
    mask = np.zeros(len(cells), dtype=bool)
    mask[rng.choice(free, size=min(m, len(free)), replace=False)] = True
    return mask


def _partly_clustered(rng: np.random.Generator, cells: np.ndarray, m: int, rho: float,
                      isolated: bool = False) -> np.ndarray:
    """m tumour cells: round(ρ·m) in one compact focus, the rest scattered outside it
    (``isolated``: none touching another or the focus, so the largest cluster is the focus)."""
    k = int(round(rho * m))
    mask = _clustered(rng, cells, k) if k else np.zeros(len(cells), dtype=bool)
    if isolated:
        return mask | _isolated(rng, cells, m - k, avoid=mask)
    rest = np.flatnonzero(~mask)
    mask[rng.choice(rest, size=min(m - k, len(rest)), replace=False)] = True
    return mask


def outcomes(cfg: SynthConfig, slides: list[SyntheticSlide]) -> pd.DataFrame:
    """Patient-level outcomes of a ``survival`` / ``regression`` cohort, one row per slide
    (slides of a case share them): ``time``, ``event`` or ``target``, and the true ``score``."""
    rng = np.random.default_rng([cfg.seed, 7])
    cases = sorted({s.case_id for s in slides})
    rho = pd.Series({s.case_id: s.score for s in slides})[cases].to_numpy()
    z = (rho - rho.mean()) / (rho.std() + 1e-12)
    if cfg.variant == "regression":
        y = cfg.effect * z + cfg.target_noise * rng.standard_normal(len(cases))
        per_case = pd.DataFrame({"target": np.round(y, 4)}, index=cases)
    else:
        t_event = rng.exponential(1.0 / np.exp(cfg.effect * z)) * 24  # months-like scale
        u = rng.uniform(0, 1, len(cases))
        lo, hi = 1e-6, float(t_event.max()) * 50  # censoring time U(0, c_max): tune c_max
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (u * mid < t_event).mean() > cfg.censoring else (lo, mid)
        t_cens = u * hi
        event = (t_event <= t_cens).astype(int)
        per_case = pd.DataFrame({"time": np.round(np.minimum(t_event, t_cens) + 0.001, 3),
                                 "event": event}, index=cases)
    per_case["score"] = np.round(rho, 4)
    return per_case.loc[[s.case_id for s in slides]].reset_index(drop=True)


def neighbour_fraction(cells: np.ndarray, mask: np.ndarray) -> float:
    """Mean share of 8-neighbours that are also in ``mask``, over the cells in ``mask``."""
    if mask.sum() == 0:
        return 0.0
    lo = cells.min(axis=0) - 1
    c = cells - lo
    grid = np.zeros(tuple((c.max(axis=0) + 2).tolist()), dtype=np.int8)
    grid[c[mask, 0], c[mask, 1]] = 1
    tissue = np.zeros_like(grid)
    tissue[c[:, 0], c[:, 1]] = 1
    kern = np.ones((3, 3), dtype=np.int8)
    kern[1, 1] = 0
    same = ndimage.convolve(grid, kern, mode="constant")[c[mask, 0], c[mask, 1]]
    nbrs = ndimage.convolve(tissue, kern, mode="constant")[c[mask, 0], c[mask, 1]]
    return float(np.mean(same / np.maximum(nbrs, 1)))


def generate(cfg: SynthConfig) -> tuple[list[SyntheticSlide], np.ndarray]:
    """Generate the slides of a cohort (in memory).

    Returns:
        The slides and the unit tumour direction (D,).
    """
    if cfg.variant not in VARIANT_CLASSES:
        raise ConfigError(
            f"unknown synth variant {cfg.variant!r}; choose from: {', '.join(VARIANT_CLASSES)}"
        )
    if cfg.slides < 2:
        raise ConfigError("synth needs at least 2 slides")
    if not 1 <= cfg.min_patches <= cfg.max_patches:
        raise ConfigError("synth needs 1 <= min_patches <= max_patches")
    cfg = cfg.resolved()
    for name in ("tumour_fraction", "lookalike_fraction"):
        lo, hi = getattr(cfg, name)
        if not 0 <= lo <= hi <= 1:
            raise ConfigError(f"synth {name} must be a range 0 <= lo <= hi <= 1, got "
                              f"({lo}, {hi})")
    rng = np.random.default_rng(cfg.seed)
    d = cfg.dim
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    protos = rng.standard_normal((cfg.tissue_types, d))
    protos *= cfg.tissue_spread / np.linalg.norm(protos, axis=1, keepdims=True)
    # tissue variation is kept orthogonal to the tumour direction, so it cannot fake a tumour
    protos -= np.outer(protos @ direction, direction)
    classes = VARIANT_CLASSES[cfg.variant]

    if not 0 < cfg.positive_fraction < 1:
        raise ConfigError(f"synth positive_fraction must be in (0, 1), got "
                          f"{cfg.positive_fraction}")
    # cases: about a third get a second slide; labels alternate by case so classes balance
    slide_case: list[int] = []
    case = 0
    while len(slide_case) < cfg.slides:
        k = 2 if cfg.slides_per_case > 1 and rng.random() < 1 / 3 else 1
        slide_case.extend([case] * k)
        case += 1
    slide_case = slide_case[: cfg.slides]
    # the i-th case (in a random order) is positive when floor((i+1)·f) steps up: evenly
    # spread, floor(cases·f) positives, and exactly the alternation i % 2 at f = 0.5
    f = cfg.positive_fraction
    case_label = ({c: classes[int(math.floor((i + 1) * f) > math.floor(i * f))]
                   for i, c in enumerate(rng.permutation(case))}
                  if cfg.variant not in CONTINUOUS else dict.fromkeys(range(case), ""))
    case_score = rng.uniform(0, 1, case)  # ρ: share of the tumour patches in one focus

    slides = []
    for i, c in enumerate(slide_case):
        label = case_label[c]
        n = int(rng.integers(cfg.min_patches, cfg.max_patches + 1))
        cells = _tissue_cells(rng, n)
        types = _tissue_types(rng, cells, cfg.tissue_types)
        m = max(1, int(round(rng.uniform(*cfg.tumour_fraction) * n)))
        m = min(m, n)
        if cfg.variant in CONTINUOUS:
            tumour = _partly_clustered(rng, cells, m, float(case_score[c]),
                                       isolated=cfg.variant == "regression")
        elif cfg.variant == "spatial":
            tumour = _clustered(rng, cells, m) if label == "clustered" else _scattered(rng, n, m)
        elif cfg.variant == "mixed":
            tumour = (_clustered(rng, cells, m) if label == "tumour"
                      else np.zeros(n, dtype=bool))
            k = int(round(rng.uniform(*cfg.lookalike_fraction) * n))
            tumour |= _isolated(rng, cells, k, avoid=tumour)
        elif cfg.variant == "sparse":
            tumour = (_isolated(rng, cells, m) if label == "tumour"
                      else np.zeros(n, dtype=bool))
        elif label == "tumour":
            tumour = _clustered(rng, cells, m) if rng.random() < 0.5 else _scattered(rng, n, m)
        else:
            tumour = np.zeros(n, dtype=bool)
        x = protos[types] + cfg.noise * rng.standard_normal((n, d))
        x[tumour] += cfg.tumour_shift * direction
        mag = 40 if cfg.mixed_magnification and i % 2 == 1 else 20
        slides.append(SyntheticSlide(
            slide_id=f"synth_{i:04d}", case_id=f"case_{c:04d}", label=label,
            cells=cells + rng.integers(2, 40, size=2), features=x.astype(np.float32),
            tumour=tumour, level0_magnification=mag, score=float(case_score[c]),
        ))
    return slides, direction


def oracle(cfg: SynthConfig, slides: list[SyntheticSlide], direction: np.ndarray) -> dict:
    """What an oracle reaches on the cohort, in sample.

    AUCs (the second class positive: ``tumour`` / ``scattered``; 0.5 is chance):

    - ``oracle_count_auc``: the share of true tumour-like patches (knowing which patches they
      are: the ceiling of an instance-level model);
    - ``oracle_arrangement_auc``: the mean share of tumour-like 8-neighbours of the true
      tumour-like patches (knowing their arrangement, not their number; a slide without any
      scores 0);
    - ``oracle_look_auc``: the bag's log-likelihood ratio along the true tumour direction,
      ``Σᵢ log(1 − π + π·exp((s·pᵢ − s²/2)/σ²))`` with pᵢ a patch's projection, s the shift,
      σ the noise and π the cohort's mean tumour-like share (knowing what tumour looks like,
      not where it is: the ceiling of a content-only model).

    Accuracies (best cut): from the true tumour mask, and from thresholding the tumour
    direction at half the shift (``spatial``: their clumping; otherwise their share), and of
    mean-pooled features along the direction.
    """
    cfg = cfg.resolved()
    if cfg.variant in CONTINUOUS:
        return _continuous_oracle(cfg, slides, direction)
    classes = VARIANT_CLASSES[cfg.variant]
    y = np.array([classes.index(s.label) for s in slides])

    def stat(mask_of) -> np.ndarray:
        if cfg.variant == "spatial":  # scattered (1) has fewer tumour neighbours
            return -np.array([neighbour_fraction(s.cells, mask_of(s)) for s in slides])
        return np.array([mask_of(s).mean() for s in slides])

    def best_acc(score: np.ndarray) -> float:
        cuts = np.unique(score)
        accs = [((score >= t).astype(int) == y).mean() for t in cuts]
        return float(max(accs + [max(y.mean(), 1 - y.mean())]))

    true_stat = stat(lambda s: s.tumour)
    feat_stat = stat(lambda s: s.features @ direction > cfg.tumour_shift / 2)
    mean_proj = np.array([float((s.features @ direction).mean()) for s in slides])
    sign = -1.0 if cfg.variant == "spatial" else 1.0  # the positive class is the scattered one
    clump = sign * np.array([neighbour_fraction(s.cells, s.tumour) for s in slides])
    share = np.array([s.tumour.mean() for s in slides])
    pi = float(np.clip(share[share > 0].mean() if (share > 0).any() else 0.0, 1e-6, 1 - 1e-6))
    sh, var = cfg.tumour_shift, cfg.noise ** 2
    look = np.array([float(np.logaddexp(np.log1p(-pi), np.log(pi) + (sh * (
        s.features.astype(np.float64) @ direction) - sh * sh / 2) / var).sum())
        for s in slides])
    return {
        "oracle_count_auc": _auc(y, share),
        "oracle_arrangement_auc": _auc(y, clump),
        "oracle_look_auc": _auc(y, look),
        "oracle_true_mask_accuracy": best_acc(true_stat),
        "oracle_feature_threshold_accuracy": best_acc(feat_stat),
        "mean_pooling_oracle_accuracy": best_acc(mean_proj),
    }


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``y == 1`` (ties count half); NaN with one class."""
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if not n1 or not n0:
        return float("nan")
    r = rankdata(score)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _continuous_oracle(cfg: SynthConfig, slides: list[SyntheticSlide], direction: np.ndarray
                       ) -> dict:
    """What knowing the true score reaches (c-index or Pearson r), and what the tumour-like
    patches' clustering (true mask) and their mean-pooled content reach, in sample."""
    from scipy.stats import pearsonr

    from srmil.training.metrics import harrell_c_index

    out = outcomes(cfg, slides)
    rho = out["score"].to_numpy()
    clump = np.array([neighbour_fraction(s.cells, s.tumour) for s in slides])
    mean_proj = np.array([float((s.features @ direction).mean()) for s in slides])
    if cfg.variant == "regression":
        y = out["target"].to_numpy()
        return {"oracle_score_pearson": float(pearsonr(rho, y)[0]),
                "oracle_true_mask_pearson": float(pearsonr(clump, y)[0]),
                "mean_pooling_oracle_pearson": float(pearsonr(mean_proj, y)[0])}
    t, e = out["time"].to_numpy(), out["event"].to_numpy().astype(bool)
    return {"oracle_score_c_index": harrell_c_index(t, e, rho),
            "oracle_true_mask_c_index": harrell_c_index(t, e, clump),
            "mean_pooling_oracle_c_index": harrell_c_index(t, e, mean_proj),
            "censored_share": float(1 - e.mean())}


def write_cohort(cfg: SynthConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Write the cohort in TRIDENT's layout and return its summary.

    Layout::

        OUT/labels.csv                                   slide_id,case_id,label,...
        OUT/synth.json                                   config + oracle accuracies
        OUT/20x_224px_0px_overlap/features_synth/<slide_id>.h5
    """
    out = Path(out)
    labels_csv = out / "labels.csv"
    if labels_csv.exists() and not overwrite:
        raise SrmilError("a cohort is already there; refusing to overwrite it", out)
    slides, direction = generate(cfg)
    feat_dir = out / trident_dir(20, cfg.patch_size) / f"features_{ENCODER_NAME}"
    for s in slides:
        step = cfg.patch_size * s.level0_magnification // 20
        write_trident_bag(
            feat_dir / f"{s.slide_id}.h5",
            s.features.astype(np.float16 if cfg.float16 else np.float32),
            s.cells * step,
            patch_size=cfg.patch_size, level0_magnification=s.level0_magnification,
            # labels.csv is absent (checked above): bags here are from an interrupted run
            target_magnification=20, encoder=ENCODER_NAME, overwrite=True,
        )
    rows = pd.DataFrame({
        "slide_id": [s.slide_id for s in slides],
        "case_id": [s.case_id for s in slides],
        "label": [s.label for s in slides],
        "n_patches": [len(s.cells) for s in slides],
        "tumour_patches": [int(s.tumour.sum()) for s in slides],
        "level0_magnification": [s.level0_magnification for s in slides],
    })
    if cfg.variant in CONTINUOUS:  # outcome columns instead of a class label
        rows = pd.concat([rows.drop(columns="label").iloc[:, :2], outcomes(cfg, slides),
                          rows.iloc[:, 3:]], axis=1)
    counts = ({c: int((rows.label == c).sum()) for c in VARIANT_CLASSES[cfg.variant]}
              if cfg.variant not in CONTINUOUS else
              {"event": int(rows.event.sum()), "censored": int((1 - rows.event).sum())}
              if cfg.variant == "survival" else {})
    summary = {
        "variant": cfg.variant,
        "slides": len(slides),
        "cases": int(rows.case_id.nunique()),
        "classes": counts,
        "features_dir": str(feat_dir),
        "labels_csv": str(labels_csv),
        "config": to_dict(cfg.resolved()),
        **oracle(cfg, slides, direction),
    }
    write_json(out / "synth.json", summary, overwrite=overwrite)
    write_csv(labels_csv, rows, overwrite=overwrite)  # last: its presence marks a complete cohort
    return summary
