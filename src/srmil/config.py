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

    folds: int = 5  # number of patient-level folds (each case in one test split)
    val_fraction: float = 0.2  # of the cases left for training in each fold
    seed: int = 0  # seed of the fold assignment


# What a ``None`` in SynthConfig means, per variant (the variant's calibrated default). The
# first three keep their original values, so their cohorts are byte-identical for every seed.
SYNTH_VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "spatial": {"tumour_fraction": (0.08, 0.15), "tumour_shift": 3.0},
    "instance": {"tumour_fraction": (0.08, 0.15), "tumour_shift": 3.0},
    "survival": {"tumour_fraction": (0.08, 0.15), "tumour_shift": 3.0},
    # regression: a fixed 15 % share (its scattered part isolated, bags/synth.py), so the
    # largest-cluster share is the score, undiluted by a varying tumour load
    "regression": {"tumour_fraction": (0.15, 0.15), "tumour_shift": 3.0},
    # mixed: a compact lesion of 3-8 % in positives, isolated look-alikes in every slide
    "mixed": {"tumour_fraction": (0.03, 0.08), "tumour_shift": 3.0},
    # sparse: 1-6 % isolated tumour-like patches with a weak shift (the issue-15 cohort)
    "sparse": {"tumour_fraction": (0.01, 0.06), "tumour_shift": 2.0},
}


@dataclass(frozen=True)
class SynthConfig:
    """Built-in synthetic cohort (``srmil synth``), a family of known-truth cohorts.

    Patch features are ``tissue prototype + noise (+ tumour shift)``. ``spatial``: the same
    number of tumour-like patches in every slide, clustered in one class and scattered in the
    other (only the arrangement tells the classes apart). ``instance``: tumour-like patches only
    in positive slides. ``mixed``: a compact lesion in positives plus isolated look-alikes in
    every slide (CAMELYON-like). ``sparse``: a few isolated tumour-like patches with a weak
    shift in positives. See :mod:`srmil.bags.synth` for each variant's exact definition.
    """

    variant: str = "spatial"  # spatial | instance | mixed | sparse | survival | regression
    slides: int = 60  # number of slides
    dim: int = 32  # feature dimension
    seed: int = 0  # the cohort's seed: same seed, same bags
    min_patches: int = 100  # fewest patches per slide
    max_patches: int = 300  # most patches per slide
    tissue_types: int = 4  # tissue prototypes, in spatially coherent regions
    tissue_spread: float = 1.0  # norm of the offsets between tissue-type prototypes (nuisance)
    noise: float = 1.0  # per-dimension std of patch noise
    tumour_shift: float | None = None  # norm of the tumour direction added to tumour-like
    #                                    patches; None: the variant's (SYNTH_VARIANT_DEFAULTS)
    tumour_fraction: tuple[float, float] | None = None  # range of the tumour-like (mixed: the
    #                        lesion's) patch share; None: the variant's (SYNTH_VARIANT_DEFAULTS)
    lookalike_fraction: tuple[float, float] = (0.02, 0.16)  # mixed: range of the share of
    #                                isolated tumour look-alike patches in every slide
    positive_fraction: float = 0.5  # share of cases in the second class (tumour / scattered)
    slides_per_case: int = 2  # at most; about a third of the cases get a second slide
    mixed_magnification: bool = True  # half the slides "scanned at 40×" (level-0 step 448)
    patch_size: int = 224  # patch side at 20× (the coords step at 20×)
    float16: bool = True  # store the features as float16 (as encoders' bags often are)
    # survival / regression variants: hazard (or target) grows with the largest tumour cluster
    effect: float = 2.0  # log-hazard (survival) or target (regression) per unit of the score
    censoring: float = 0.3  # survival: target share of censored patients (uniform censoring)
    target_noise: float = 0.3  # regression: noise std of the target (score units)

    def resolved(self) -> SynthConfig:
        """This config with every ``None`` replaced by the variant's default."""
        d = SYNTH_VARIANT_DEFAULTS.get(self.variant, SYNTH_VARIANT_DEFAULTS["spatial"])
        return dataclasses.replace(self, **{k: v for k, v in d.items()
                                            if getattr(self, k) is None})


@dataclass(frozen=True)
class StudyConfig:
    """The known-truth study (``benchmarks/study.py``, :mod:`srmil.study`): models on
    identical folds over ``srmil synth`` cohorts, one knob varied at a time from each variant's
    base cohort, several seeds. A benchmark: it costs CPU-hours, never a test."""

    variants: tuple[str, ...] = ("spatial", "mixed", "sparse")  # base cohorts (signal kinds)
    models: tuple[str, ...] = ("srmil", "srmil:w_gen=0", "patchgcn", "abmil", "transmil",
                               "mean")  # model specs, as `srmil compare --models`
    knobs: tuple[str, ...] = (  # KNOB=v1,v2,…; fractions and shifts as multiples of the
        #                         variant's default, bag_size the most patches (fewest: a third)
        "lesion_fraction=0.5,1,2", "shift=0.5,1,1.5", "bag_size=150,300,900",
        "dim=16,32,64", "tissue_spread=0.5,1,2")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # cohort, fold and training seed of each repeat
    slides: int = 60  # slides per cohort
    dim: int = 32  # base feature dimension
    bag_size: int = 300  # base: most patches per slide (fewest: a third of it)
    folds: int = 5  # patient-level folds, identical for every model of a cohort
    epochs: int = 50  # training epochs of every model
    accelerator: str = "cpu"  # where the models train (cpu | gpu | auto)
    bootstrap: int = 200  # resamples of each run's confidence intervals


QUICK_STUDY = StudyConfig(  # `benchmarks/study.py --quick`: ~35 min on one niced 2-core CPU;
    #                          without TransMIL, ≈ 1.5 s per small bag on a CPU (README)
    models=("srmil", "srmil:w_gen=0", "patchgcn", "abmil", "mean"),
    knobs=(), seeds=(0, 1, 2), slides=40, dim=16, bag_size=120, folds=3, epochs=20)


DEMO_EPOCHS = 20  # `srmil demo`: the paper trains 100; 20 keep the demo near two minutes on
#                   2 CPU cores (12 left one fold of seed 0 unconverged with the grid draws)


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
    w_ce: float = 1.0  # METHOD.md: weight of CE_full against CE_masked (formula above)
    cls_hidden: int = 128  # METHOD.md: Linear(64, 128) → ReLU → Dropout → Linear(128, C)
    cls_dropout: float = 0.059  # METHOD.md: dropout of the classifier's hidden layer
    pooling: str = "supernode"  # supernode | gated (ABMIL-style over patch embeddings)
    backend: str = "grid"  # grid: the three encoder passes stacked on the padded neighbour
    #                        table (same maths, exact in float64, far less memory); pyg: the
    #                        faithful per-edge PyG path, one call per pass, the reference
    kernels: str = "auto"  # grid backend's attention backward: auto (torch.compile on the CPU
    #                        for large bags, eager if that fails) | compiled | eager
    checkpoint: bool = False  # grid backend: recompute each GAT layer in backward instead of
    #                           keeping its activations (exact: dropout draws are replayed;
    #                           less memory, more time; see README "Speed and memory")
    share_projection: bool = False  # approximate (grid backend): the three passes share one
    #                                 first-layer dropout mask, so the first projection runs
    #                                 on N + K rows instead of 3·N (K masked patches)
    train_crop: int = 0  # approximate: train each step on a spatially contiguous crop of at
    #                      most this many patches (0: the whole bag); inference sees all


@dataclass(frozen=True)
class SRMILLowMaskConfig(SRMILConfig):
    """SRMIL with 30 % of the patches masked instead of the reference's 70 % (the
    ``srmil_lowmask`` preset; the evidence is in README, SRMIL on sparse, isolated signals)."""

    mask_rate: float = 0.3  # the preset's one change: floor(0.3·N) patches masked


@dataclass(frozen=True)
class MeanConfig:
    """Instance-level MLP + mean or max pooling (the trivial baselines)."""

    hidden: int = 128  # instance MLP: Linear(D, hidden) + ReLU + Dropout
    dropout: float = 0.1  # after the instance MLP's hidden layer


@dataclass(frozen=True)
class ABMILConfig:
    """ABMIL (Ilse et al. 2018) as used on pathology features (CLAM's sizes: D → 512 → 256)."""

    hidden: int = 512  # instance embedding after Linear(D, hidden) + ReLU
    attn_dim: int = 256  # attention hidden size
    dropout: float = 0.25  # after the instance embedding (CLAM's drop_out 0.25)
    gated: bool = False  # gated attention (tanh ⊙ sigmoid, Ilse et al. eq. 10)


@dataclass(frozen=True)
class GatedABMILConfig(ABMILConfig):
    """ABMIL with the gated attention (Ilse et al. 2018, eq. 10)."""

    gated: bool = True  # gated attention (tanh ⊙ sigmoid, Ilse et al. eq. 10)


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
    seed: int = 0  # model initialisation, bag order, masks and dropout
    accelerator: str = "auto"  # auto (GPU when present) | cpu | gpu | cuda | mps
    precision: str = "32-true"  # Lightning precision string, e.g. bf16-mixed on a GPU
    cache_gb: float = 4.0  # keep the cohort's bags in memory when they fit in this many GiB
    loader_workers: int = 1  # DataLoader processes reading bags ahead of the step when the
    #                          cohort is over cache_gb (0: read in the training process)
    bootstrap: int = 1000  # resamples for the 95 % confidence intervals
    class_weights: str | tuple[float, ...] = "none"  # none | balanced (inverse class frequency
    #                                                  of the training split) | [w0, w1, …]
    sampler: str = "shuffle"  # shuffle (every bag once per epoch) | balanced (classes drawn
    #                           equally often; the epoch stays len(train) bags)
    calibrate: str = "none"  # none | temperature (scaling fitted on each fold's validation)
    logger: str = "csv"  # csv (Lightning CSVLogger, per step and epoch) | tensorboard (also)
    bags_per_step: int = 1  # bags per optimiser step (METHOD.md: 1): gradients of the bags'
    #                         mean objective, accumulated bag by bag (memory of one bag); a
    #                         batch-level loss (survival.loss cox) holds the step's bags at once
    devices: int = 1  # processes training each fold with DDP (GPUs, or CPU processes with
    #                   gloo): each takes bags_per_step bags per optimiser step; per node
    #                   when srmil is started by torchrun
    num_nodes: int = 1  # nodes training each fold together (torchrun on every node; DDP
    #                     over devices × num_nodes processes)
    recipe: str = "shared"  # shared: the settings here, the same for every model | paper:
    #                         each model's official recipe (srmil.training.optim.RECIPES:
    #                         optimizer, lr, weight_decay, betas, scheduler, early_stopping)
    optimizer: str = "adamw"  # METHOD.md: adamw | adam | radam | lookahead_radam (TransMIL)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam-family moment coefficients
    scheduler: str = "cosine"  # METHOD.md: cosine (annealed to eta_min per epoch) | none
    no_decay_1d: bool = False  # METHOD.md: decay on every parameter; True: none on biases
    #                            and other 1-D parameters (TransMIL / timm)
    early_stopping: int = 0  # stop after this many epochs without a lower val loss once
    #                          select_after has passed (0: train every epoch; CLAM: 20)
    standardise: bool = False  # z-score every feature with the mean / std of the fold's
    #                            training patches (saved as fold_K/standardise.json, applied
    #                            again by predict, evaluate and heatmap)

    def __post_init__(self) -> None:
        # checked here, before a run directory is made, not after an epoch
        if isinstance(self.class_weights, str) and self.class_weights not in ("none",
                                                                              "balanced"):
            raise ConfigError("train.class_weights must be none, balanced or a list of "
                              f"weights, got {self.class_weights!r}")
        for name, choices in (("sampler", ("shuffle", "balanced")),
                              ("calibrate", ("none", "temperature")),
                              ("logger", ("csv", "tensorboard")),
                              ("recipe", ("shared", "paper")),
                              ("optimizer", ("adamw", "adam", "radam", "lookahead_radam")),
                              ("scheduler", ("cosine", "none"))):
            if getattr(self, name) not in choices:
                raise ConfigError(f"train.{name} must be one of {', '.join(choices)}, got "
                                  f"{getattr(self, name)!r}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.bags_per_step < 1:
            raise ConfigError(f"train.bags_per_step must be >= 1, got {self.bags_per_step}")
        if self.devices < 1:
            raise ConfigError(f"train.devices must be >= 1, got {self.devices}")
        if self.num_nodes < 1:
            raise ConfigError(f"train.num_nodes must be >= 1, got {self.num_nodes}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.early_stopping < 0:
            raise ConfigError(f"train.early_stopping must be >= 0, got {self.early_stopping}")
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
class SurvivalConfig:
    """Survival task (``task: survival``): labels ``time`` + ``event`` (1 = event) or CLAM /
    Patch-GCN's ``survival_months`` + ``censorship`` (1 = censored)."""

    loss: str = "nll"  # nll: discrete-time NLL over time bins (Patch-GCN / SurvPath) | cox:
    #                    Cox partial likelihood, risk sets within train.bags_per_step bags
    bins: int = 4  # Patch-GCN: quartiles of the training split's event times
    alpha_surv: float = 0.0  # Patch-GCN's --alpha_surv (NLLSurvLoss default): extra weight
    #                          of the uncensored term
    eps: float = 1e-7  # lower bound inside the logs (Patch-GCN)
    horizons: tuple[float, ...] = ()  # time-dependent AUC / Brier times; () = the quartiles
    #                                   of the training split's event times

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ConfigError(f"survival.bins must be >= 1, got {self.bins}")
        if not 0 <= self.alpha_surv <= 1:
            raise ConfigError(f"survival.alpha_surv must be in [0, 1], got {self.alpha_surv}")
        if self.loss not in ("nll", "cox"):
            raise ConfigError(f"survival.loss must be nll or cox, got {self.loss!r}")


@dataclass(frozen=True)
class RegressionConfig:
    """Regression task (``task: regression``): a numeric ``target`` column, standardised on the
    training split (mean and std saved with the run), reported back in its units."""

    loss: str = "mse"  # mse | huber
    huber_delta: float = 1.0  # in standard deviations of the training targets
    strata: int = 4  # folds stratified by this many target quantiles


@dataclass(frozen=True)
class DataConfig:
    """What one bag of a run is."""

    bag_level: str = "slide"  # slide: one bag per slide (as the paper) | patient: all slides of
    #                           a case in one bag, graphs side by side; predictions per case

    def __post_init__(self) -> None:
        if self.bag_level not in ("slide", "patient"):
            raise ConfigError(f"data.bag_level must be slide or patient, got {self.bag_level!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved resolved as ``config.json`` in the run directory."""

    model: str = "srmil"  # MIL model (see `srmil models`)
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the model's Config
    train: TrainConfig = TrainConfig()  # optimisation, imbalance, calibration, selection, logs
    graph: GraphConfig = GraphConfig()  # the spatial patch graph of each slide
    split: SplitConfig = SplitConfig()  # patient-level folds
    data: DataConfig = DataConfig()  # what one bag is: a slide or a patient
    task: str = "auto"  # auto: from the labels CSV's columns (label → classification; time +
    #                     event or survival_months + censorship → survival; target →
    #                     regression) | classification | survival | regression
    survival: SurvivalConfig = SurvivalConfig()  # the survival task's loss, bins and horizons
    regression: RegressionConfig = RegressionConfig()  # the regression task's loss and strata

    def __post_init__(self) -> None:
        tasks = ("auto", "classification", "survival", "regression")
        if self.task not in tasks:
            raise ConfigError(f"unknown task {self.task!r}; choose from: {', '.join(tasks)}")
        if (self.task in ("auto", "survival") and self.survival.loss == "cox"
                and self.train.bags_per_step < 2):
            raise ConfigError("survival.loss cox compares the risks of the bags in one step: "
                              "set train.bags_per_step >= 2 (16-64 is usual), got "
                              f"{self.train.bags_per_step}")


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

    slides: int = 40  # slides of the synthetic cohort
    dim: int = 32  # their feature dimension
    folds: int = 4  # folds of the timed cv
    epochs: int = 3  # epochs per fold
    model: str = "abmil"  # the model trained
    jobs: tuple[int, ...] = (1, 2)  # local processes at a time, one timed run each
    devices: tuple[int, ...] = (1, 2)  # DDP processes training one fold, one timed run each
    #                                    (() skips the DDP figures)
    seed: int = 0  # the cohort's and the run's seed
    threads: int | None = None  # torch threads per job (None: cpu_count // jobs)


SECTIONS = {"train": TrainConfig, "graph": GraphConfig, "split": SplitConfig,
            "data": DataConfig, "survival": SurvivalConfig, "regression": RegressionConfig}

# the value-coercion and ``--set`` engine lives in srmil.config_io; re-exported here
from srmil.config_io import (  # noqa: E402
    _check_type,
    apply_sets,
    commented_yaml,
    field_descriptions,
    from_dict,
    load_config_file,
    parse_value,
    to_dict,
)

__all__ = [
    "DEMO_EPOCHS", "ABMILConfig", "CLAMConfig", "DSMILConfig", "DTFDConfig", "DataConfig",
    "EXECUTORS",
    "ExecutorConfig", "ExtractConfig", "GatedABMILConfig", "GraphConfig", "HeatmapConfig",
    "MeanConfig", "PatchConfig", "PatchGCNConfig", "RegressionConfig", "RunConfig", "SECTIONS",
    "SRMILConfig", "ScaleBenchConfig", "SplitConfig", "StudyConfig", "SurvivalConfig",
    "SynthConfig",
    "TissueConfig", "TrainConfig", "TransMILConfig", "_check_type", "apply_sets",
    "commented_yaml", "field_descriptions", "from_dict",
    "load_config_file", "parse_value", "to_dict",
]
