"""Every config dataclass and every default, in one place.

Defaults marked *METHOD.md* are the reference behaviour described in ``docs/METHOD.md``.
Configs are frozen; ``to_dict`` / ``from_dict`` (:mod:`srmil.config_io`, re-exported here) give
JSON round trips, and unknown keys are an error (``ConfigError``) so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from srmil.errors import ConfigError


@dataclass(frozen=True)
class GraphConfig:
    """Spatial grid graph over the patches of one slide (METHOD.md, Graph)."""

    window: int = 2  # METHOD.md: edge if grid distance <= window·√2 (the 5×5 neighbourhood)
    step: float | None = None  # None: from h5 attrs, cross-checked with coordinates; never 224
    self_loops: bool = True  # METHOD.md: a self loop on every patch node
    step_tolerance: float = 0.02  # relative disagreement allowed between attrs and coordinates
    off_grid_tolerance: float = 0.05  # fraction of a step a coordinate may sit off its grid


@dataclass(frozen=True)
class SplitConfig:
    """Patient-level stratified k-fold with a validation part carved from each training part."""

    folds: int = 5
    val_fraction: float = 0.2  # of the cases left for training in each fold
    seed: int = 0


@dataclass(frozen=True)
class SynthConfig:
    """Built-in synthetic cohort (``srmil synth``), calibrated to be learnable.

    Patch features are ``tissue prototype + noise (+ tumour shift)``. The ``spatial`` variant puts
    the same number of tumour-like patches in every slide, clustered in one class and scattered
    in the other, so only the arrangement tells the classes apart. ``instance`` puts them only in
    positive slides.
    """

    variant: str = "spatial"  # spatial | instance
    slides: int = 60
    dim: int = 32
    seed: int = 0
    min_patches: int = 100
    max_patches: int = 300
    tissue_types: int = 4
    tissue_spread: float = 1.0  # norm of the offsets between tissue-type prototypes
    noise: float = 1.0  # per-dimension std of patch noise
    tumour_shift: float = 3.0  # norm of the tumour direction added to tumour-like patches
    tumour_fraction: tuple[float, float] = (0.08, 0.15)  # range of tumour-like patch share
    slides_per_case: int = 2  # at most; about a third of the cases get a second slide
    mixed_magnification: bool = True  # half the slides "scanned at 40×" (level-0 step 448)
    patch_size: int = 224
    float16: bool = True


@dataclass(frozen=True)
class SRMILConfig:
    """SRMIL network and objective (METHOD.md, Network / reconstruction / total loss)."""

    reformer: str = "linear"  # METHOD.md: Linear(D, D) with bias; options identity | mlp
    heads: int = 4  # METHOD.md: 4 heads × 64 dims
    hidden: int = 64  # per head; 256 concatenated
    layers: int = 2  # encoder GAT layers
    feat_drop: float = 0.11  # METHOD.md: dropout on each layer's input
    attn_drop: float = 0.15  # METHOD.md: after the edge softmax
    negative_slope: float = 0.2  # METHOD.md: LeakyReLU slope of the attention logits
    residual: str = "faithful"  # faithful: projection where dims differ, none where equal
    #                             (reference quirk); identity: identity where dims are equal
    supernode_std: float = 0.01  # METHOD.md: supernode token init N(0, 0.01)
    mask_rate: float = 0.7  # METHOD.md: floor(0.7·N) patches masked
    mask_token_std: float = 0.01  # METHOD.md: encoder / decoder mask tokens N(0, 0.01)
    decoder_layers: int = 2  # METHOD.md: 2 GAT layers, last one 1 head, to D dims
    alpha: float = 1.0  # METHOD.md: scaled cosine error exponent
    w_gen: float = 1.8  # METHOD.md: L = (2-w_gen)·[(2-w_ce)·CE_masked + w_ce·CE_full] + w_gen·L_rec
    w_ce: float = 1.0
    cls_hidden: int = 128  # METHOD.md: Linear(64, 128) → ReLU → Dropout → Linear(128, C)
    cls_dropout: float = 0.059
    pooling: str = "supernode"  # supernode | gated (ABMIL-style over patch embeddings)
    backend: str = "grid"  # grid: the three encoder passes stacked on the padded neighbour
    #                        table (same maths, exact in float64, far less memory); pyg: the
    #                        faithful per-edge PyG path, one call per pass, the reference
    kernels: str = "auto"  # grid backend's attention backward: auto (torch.compile on the CPU
    #                        for large bags, eager if that fails) | compiled | eager


@dataclass(frozen=True)
class MeanConfig:
    """Instance-level MLP + mean or max pooling (the trivial baselines)."""

    hidden: int = 128
    dropout: float = 0.1


@dataclass(frozen=True)
class ABMILConfig:
    """ABMIL (Ilse et al. 2018) as used on pathology features (CLAM's sizes: D → 512 → 256)."""

    hidden: int = 512  # instance embedding after Linear(D, hidden) + ReLU
    attn_dim: int = 256  # attention hidden size
    dropout: float = 0.25
    gated: bool = False


@dataclass(frozen=True)
class GatedABMILConfig(ABMILConfig):
    """ABMIL with the gated attention (Ilse et al. 2018, eq. 10)."""

    gated: bool = True


@dataclass(frozen=True)
class CLAMConfig:
    """CLAM-SB (Lu et al. 2021); defaults from mahmoodlab/CLAM ``main.py`` / ``model_clam.py``."""

    hidden: int = 512  # size_arg "small": D → 512 → 256
    attn_dim: int = 256  # size_arg "small"
    dropout: float = 0.25  # main.py --drop_out 0.25: after the fc and in both attention branches
    gated: bool = True  # CLAM_SB(gate=True)
    k_sample: int = 8  # main.py --B 8: top-k / bottom-k attended patches; capped at N
    bag_weight: float = 0.7  # main.py --bag_weight 0.7: total = 0.7·CE_bag + 0.3·L_inst
    subtyping: bool = False  # True for subtyping tasks (out-of-class clustering); False as
    #                          CLAM's tumour-vs-normal task


@dataclass(frozen=True)
class TransMILConfig:
    """TransMIL (Shao et al. 2021); defaults from szc19990412/TransMIL ``models/TransMIL.py``."""

    dim: int = 512  # _fc1: Linear(D, 512) + ReLU
    heads: int = 8  # NystromAttention(heads=8, dim_head=dim // 8)
    landmarks: int = 256  # num_landmarks = dim // 2
    pinv_iterations: int = 6  # Moore-Penrose iterations, as the official code
    residual_kernel: int = 33  # depth-wise conv residual of the values (nystrom-attention default)
    dropout: float = 0.1  # NystromAttention(dropout=0.1), on the attention output projection


@dataclass(frozen=True)
class DSMILConfig:
    """DSMIL (Li et al. 2021); defaults from binli123/dsmil-wsi ``dsmil.py`` / ``train_tcga.py``."""

    q_dim: int = 128  # BClassifier: queries of 128 dims
    nonlinear_q: bool = True  # --non_linearity 1: Linear → ReLU → Linear → Tanh
    passing_v: bool = False  # BClassifier(passing_v=False): V = the instance features
    dropout_v: float = 0.0  # --dropout_node 0 (only used with passing_v)
    average: bool = True  # --average True: predict with the mean of both streams' probabilities


@dataclass(frozen=True)
class DTFDConfig:
    """DTFD-MIL (Zhang et al. 2022); defaults from hrzhang1123/DTFD-MIL ``Main_DTFD_MIL.py``."""

    hidden: int = 512  # --mDim 512: DimReduction Linear(D, 512, bias=False) + ReLU
    attn_dim: int = 128  # Attention_Gated(L=512, D=128)
    pseudo_bags: int = 3  # M; the training functions' default (their argparse says 4)
    distill: str = "afs"  # --distill_type AFS; options maxmin (MaxMinS) | max (MaxS)
    instances_per_group: int = 1  # total_instance // numGroup = 1 (MaxMinS / MaxS only)
    dropout: float = 0.0  # --droprate 0 (tier-1 classifier input)
    dropout_2: float = 0.0  # --droprate_2 0 (tier-2 classifier input)
    eval_seed: int = 0  # eval-mode pseudo-bags: a fixed permutation seeded by this


@dataclass(frozen=True)
class PatchGCNConfig:
    """Patch-GCN (Chen et al. 2021); defaults from mahmoodlab/Patch-GCN ``model_graph_mil.py``."""

    hidden: int = 128  # hidden_dim 128: fc Linear(D, 128) + ReLU + Dropout(0.25)
    layers: int = 3  # GENConv layers (num_layers=4 counts the input fc)
    block: str = "res"  # DeepGCNLayer(block='res'); 'res+' as DeeperGCN
    gcn_dropout: float = 0.1  # DeepGCNLayer(dropout=0.1)
    dropout: float = 0.25  # fc, path_phi, path_rho and the gated attention branches
    learn_t: bool = True  # GENConv(aggr='softmax', t=1.0, learn_t=True, num_layers=2,
    #                       norm='layer')


@dataclass(frozen=True)
class HeatmapConfig:
    """``srmil heatmap`` / the report's gallery."""

    method: str = "auto"  # auto: attention when the model has it, else gradient × input
    norm: str = "rank"  # rank percentile within the slide (never "cold all over") | minmax
    cmap: str = "viridis"  # perceptually uniform; dark low end stands out on white glass
    max_side: int = 1200  # px of the bag-only heatmap's long side (the chosen resolution)
    thumb_side: int = 1200  # px of the thumbnail read for the overlay (= each panel: no waste)
    alpha: float = 0.5  # opacity of the scores over the thumbnail
    top_k: int = 8  # patches listed (and cropped, with a slide) at each end; CLAM's B=8
    crop_px: int = 224  # side of the saved patch crops
    geojson: bool = True  # QuPath detections, one square per patch


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and model selection (METHOD.md, Optimisation)."""

    epochs: int = 100  # METHOD.md
    lr: float = 5e-4  # METHOD.md: AdamW
    weight_decay: float = 1e-5  # METHOD.md: on every parameter
    eta_min: float = 0.0  # METHOD.md: cosine annealing per epoch, no warm-up
    shuffle: bool = True  # reshuffle bags every epoch; False = the reference's fixed order
    select_after: float = 0.6  # METHOD.md: select among 0-based epochs > 0.6·epochs
    seed: int = 0
    accelerator: str = "auto"  # auto (GPU when present) | cpu | gpu | cuda | mps
    precision: str = "32-true"  # Lightning precision string, e.g. bf16-mixed on a GPU
    cache_gb: float = 4.0  # keep the cohort's bags in memory when they fit in this many GiB
    bootstrap: int = 1000  # resamples for the 95 % confidence intervals

    def __post_init__(self) -> None:
        # checked here, before a run directory is made, not after an epoch
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.select_after < 1:
            raise ConfigError(f"train.select_after must be in [0, 1), got {self.select_after}")


@dataclass(frozen=True)
class StepBenchConfig:
    """What ``srmil bench step`` measures (a benchmark, never a test).

    Attributes:
        sizes: patch counts N; the first size runs at ``small_dim`` (overhead-bound bags).
        dim: feature dimension D of the other sizes.
        small_dim: D of the first size.
        models: labels or model names to run (empty: SRMIL's variants and every model).
        repeats: timed steps per config (after one warm-up step).
        faithful_up_to: largest N for the faithful PyG path (7 s per step at 10,000 here).
        device: ``cpu`` or ``cuda``.
        threads: torch threads in each worker (``None``: torch's default).
        timeout_s: per-config limit; a config over it is reported, not waited for.
    """

    sizes: tuple[int, ...] = (200, 2_000, 10_000, 50_000)
    dim: int = 1024
    small_dim: int = 32
    models: tuple[str, ...] = ()
    repeats: int = 3
    faithful_up_to: int = 20_000
    device: str = "cpu"
    threads: int | None = None
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class TissueConfig:
    """Classical tissue segmentation on a low-resolution image (``srmil segment``).

    Otsu on the HSV saturation, then morphology; sizes are in micrometres so they mean the same
    on every scanner. TRIDENT's Otsu model and CLAM's segmentation work on a similar thumbnail.
    """

    seg_mpp: float = 4.0  # µm per pixel of the segmentation image (≈ 2.5×): cells are ~10 µm
    max_side: int = 8192  # cap on the segmentation image's longer side (memory on huge slides)
    median_um: float = 24.0  # median filter on the saturation before thresholding (denoise)
    min_saturation: float = 0.05  # floor on the Otsu threshold: a blank slide has no tissue
    close_um: float = 16.0  # closing radius that joins fragments of one piece of tissue
    min_tissue_mm2: float = 0.01  # drop tissue components smaller than this (dust, debris)
    min_hole_mm2: float = 0.005  # fill holes smaller than this; bigger ones stay holes
    simplify_px: float = 1.0  # polygon simplification tolerance, in segmentation pixels
    thumbnail_side: int = 1000  # QC thumbnails' longer side (TRIDENT: 1000)


@dataclass(frozen=True)
class PatchConfig:
    """Patch grid on level 0 (``srmil patch``); defaults 20×, 224 px, overlap 0."""

    magnification: int = 20  # target magnification of the patches
    patch_size: int = 224  # pixels at the target magnification
    overlap: int = 0  # pixels at the target magnification (TRIDENT's ``overlap``)
    min_tissue: float = 0.25  # keep a patch when at least this fraction of it is tissue
    mask_resolution: int = 16  # tissue-mask pixels per patch side when measuring the fraction


@dataclass(frozen=True)
class ExtractConfig:
    """Patch encoding (``srmil extract``): which encoder, where it runs, how features are stored."""

    encoder: str = "stain_stats"  # a preset, stain_stats (no weights), or timm:<architecture>
    weights: str | None = None  # local weights file (.safetensors, .pt, .bin); never downloaded
    batch_size: int = 64  # patches per forward pass
    workers: int = 2  # DataLoader worker processes reading patches (0: in this process)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:<i>
    precision: str = "fp32"  # storage of the features: fp32 | fp16 (computation: AMP on GPU)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved resolved as ``config.json`` in the run directory."""

    model: str = "srmil"
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the model's Config
    train: TrainConfig = TrainConfig()
    graph: GraphConfig = GraphConfig()
    split: SplitConfig = SplitConfig()


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the folds (× model specs) of ``srmil cv`` / ``srmil compare`` run (submitit).

    The ``executor:`` section of a ``--config`` file (``--executor`` and ``--jobs`` override
    ``kind`` and ``jobs``). Never part of a run's ``config.json``: where a fold ran does not
    change its result, so a run may be continued on another executor.
    """

    kind: str = "none"  # none: in this process, fold after fold | local: local processes |
    #                     slurm: one SLURM job array | debug: submitit's in-process executor
    jobs: int = 1  # at a time: local processes; slurm: the array's parallelism (0: no limit)
    folder: str | None = None  # submitit's job files and logs (default: <out>/logs)
    wait: bool = True  # wait for the jobs, then summarise; False: submit and return (slurm)
    threads: int | None = None  # torch threads per job (None: local cpu_count // jobs, slurm
    #                             cpus_per_task)
    timeout_min: int = 24 * 60  # per job
    gpus_per_node: int = 0  # GPUs per job (local: CUDA_VISIBLE_DEVICES is set per job, so 0
    #                         means CPU only)
    cpus_per_task: int = 4  # slurm
    mem_gb: float = 32.0  # slurm
    partition: str | None = None  # slurm
    account: str | None = None  # slurm
    qos: str | None = None  # slurm
    constraint: str | None = None  # slurm
    setup: tuple[str, ...] = ()  # shell lines before each SLURM job (module load, source venv)
    additional: dict[str, Any] = dataclasses.field(default_factory=dict)  # more #SBATCH keys
    poll_s: float = 1.0  # how often the waiting process looks at its jobs

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"executor.kind must be one of {', '.join(EXECUTORS)}, got "
                              f"{self.kind!r}")
        if self.jobs < 0 or (self.jobs == 0 and self.kind != "slurm"):
            raise ConfigError(f"executor.jobs must be >= 1 (0: no limit, slurm only), got "
                              f"{self.jobs}")


EXECUTORS = ("none", "local", "slurm", "debug")


@dataclass(frozen=True)
class ScaleBenchConfig:
    """What ``srmil bench scale`` measures (a benchmark, never a test): folds per hour of
    ``cv --executor local`` with 1 and with ``jobs`` processes on a synthetic cohort."""

    slides: int = 40
    dim: int = 32
    folds: int = 4
    epochs: int = 3
    model: str = "abmil"
    jobs: tuple[int, ...] = (1, 2)
    seed: int = 0
    threads: int | None = None  # torch threads per job (None: cpu_count // jobs)


SECTIONS = {"train": TrainConfig, "graph": GraphConfig, "split": SplitConfig}

# the value-coercion and ``--set`` engine lives in srmil.config_io; re-exported here
from srmil.config_io import (  # noqa: E402
    _check_type,
    apply_sets,
    from_dict,
    load_config_file,
    parse_value,
    to_dict,
)

__all__ = [
    "ABMILConfig", "CLAMConfig", "DSMILConfig", "DTFDConfig", "EXECUTORS", "ExecutorConfig",
    "ExtractConfig",
    "GatedABMILConfig", "GraphConfig", "HeatmapConfig", "MeanConfig", "PatchConfig",
    "PatchGCNConfig", "RunConfig", "SECTIONS", "SRMILConfig", "ScaleBenchConfig", "SplitConfig",
    "SynthConfig",
    "TissueConfig", "TrainConfig", "TransMILConfig", "_check_type", "apply_sets", "from_dict",
    "load_config_file", "parse_value", "to_dict",
]
