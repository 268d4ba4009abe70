"""Typed configuration of FedLPPA runs (loaded by ``common.config``; every key validated before any work).

One config = one method on one multi-site dataset. ``federation.method``:

- ``fedlppa``: UNetUniV5 (prompts, dual attention, dual decoders), L = pCE + 0.1 L_uni + 0.5 L_pls, prompt-similarity
  auxiliary decoders and learnable aggregation (ALA) of the decoders (official ``--strategy FedUniV2.1``);
- ``fedavg``, ``fedprox`` (proximal term ``mu``), ``fedbn`` (BatchNorm layers stay local), ``fedala`` (ALA on the
  decoder), ``local`` (no communication): plain UNet + pCE;
- ``centralized_full`` (pooled sites, full masks) and ``centralized_weak`` (pooled sites, each site's weak labels):
  one plain UNet, the upper and the weak centralised references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from common.runtime import RuntimeConfig as CommonRuntime
from common.runtime import refuse_unsupported
from fedlppa.losses import LossConfig
from fedlppa.model import SUP_TYPES, ModelConfig

__all__ = ["Config", "DataConfig", "SynthConfig", "OptimConfig", "FederationConfig", "FailureConfig", "ALAConfig",
           "RuntimeConfig", "ClientResourcesConfig", "EvalConfig", "METHODS", "FEDERATED", "CENTRALIZED",
           "SITE_LETTERS", "resolved_arch"]

METHODS = ("fedlppa", "fedavg", "fedprox", "fedbn", "fedala", "local", "centralized_full", "centralized_weak")
FEDERATED = ("fedlppa", "fedavg", "fedprox", "fedbn", "fedala")
CENTRALIZED = ("centralized_full", "centralized_weak")
SITE_LETTERS = "abcdefghij"


@dataclass
class SynthConfig:
    """Synthetic multi-site stand-in (see synth.py): ``kind`` faz (avascular zone in vessel texture), odoc (nested
    disc/cup) or polyp (irregular blob); per-site train counts, one test count, image size, seed. ``png`` also
    writes the PNG release layout next to the h5 one. ``styles``: the site style table (``default``; ``wide``,
    larger acquisition gaps with inverted contrast at the shared style; ``moderate``, those gaps without the
    inversion); ``sparsity``: the weak-label geometry (``default`` or ``sparse``, see
    ``weak_labels.SPARSITY``)."""

    kind: Literal["faz", "odoc", "polyp"] = "faz"
    styles: Literal["default", "wide", "moderate"] = "default"
    sparsity: Literal["default", "sparse"] = "default"
    size: int = 64
    train_counts: list[int] = field(default_factory=lambda: [24, 16, 20, 40, 8])
    test_count: int = 12
    seed: int = 0
    png: bool = False


@dataclass
class DataConfig:
    """``<root>/Domain{d}/{train,test}/*.h5``; site k reads ``Domain{domains[k]}`` with label key ``sup_types[k]``
    (scribble, scribble_noisy, keypoint, block, box, mask). ``synthetic``: generate the set at ``root`` on first use.
    ``image_fill``: value of rotated-in image corners (official 0.8 for grey images, 0 for RGB). ``verify``: check
    every h5 file before any work (``header``: it opens; ``full``: every dataset decodes; ``off``)."""

    dataset: Literal["faz", "odoc", "polyp", "prostate"] = "faz"
    root: str = "data/synthetic/fedlppa/faz64"
    synthetic: bool = True
    domains: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    sup_types: list[str] = field(default_factory=lambda: ["scribble", "keypoint", "block", "box", "scribble_noisy"])
    in_channels: int = 1
    num_classes: int = 2
    image_size: int = 64
    augment: bool = True
    image_fill: float = 0.8
    verify: Literal["header", "full", "off"] = "header"
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        if len(self.domains) != len(self.sup_types):
            raise ValueError(f"data.domains ({len(self.domains)} sites) and data.sup_types ({len(self.sup_types)}) "
                             f"must have one entry per site")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"data.domains lists a Domain twice: {self.domains}")
        bad = [s for s in self.sup_types if s not in SUP_TYPES]
        if bad:
            raise ValueError(f"data.sup_types has unknown type(s) {bad}; choose from {list(SUP_TYPES)}")
        if self.image_size % 16:
            raise ValueError(f"data.image_size = {self.image_size} must be divisible by 16")

    @property
    def num_sites(self) -> int:
        return len(self.domains)


@dataclass
class OptimConfig:
    """AdamW, re-created every round (moments reset), poly decay per local iteration:
    ``lr = lr0 (1 - it / total_iters) ** poly_power`` with ``total_iters = rounds * iters_per_round``."""

    lr: float = 0.01
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 12
    poly_power: float = 0.9


@dataclass
class FailureConfig:
    """Test knob: site ``site`` raises in round ``round`` after ``after_iters`` local iterations (-1 = never)."""

    site: int = -1
    round: int = 0
    after_iters: int = 0


@dataclass
class FederationConfig:
    """Rounds of ``iters_per_round`` local iterations (official 6000 x 5). ``eval_every``: evaluate the
    personalised models every N rounds (0 = only after the last). ``dual_init``: how a site's auxiliary decoder is
    built from the uploaded ones. ``on_failure``: a site that raises is left out of that round (``continue``) or
    stops the run (``abort``); fewer than ``min_sites`` replies always stops. ``bn_stats``: whose BatchNorm
    running statistics a site's model uses, for training and scoring: ``global`` (theta_G's averaged buffers, as
    released) or ``local`` (ours: the site's own, kept across rounds and never overwritten by theta_G's, as in
    FedALA's code, which only overwrites parameters, and SiloBN; the learned BatchNorm weights stay shared)."""

    method: Literal["fedlppa", "fedavg", "fedprox", "fedbn", "fedala", "local", "centralized_full",
                    "centralized_weak"] = "fedlppa"
    rounds: int = 6000
    iters_per_round: int = 5
    eval_every: int = 0
    dual_init: Literal["aggregated", "nearest", "adjacent", "random"] = "aggregated"
    fedprox_mu: float = 0.01
    on_failure: Literal["continue", "abort"] = "continue"
    bn_stats: Literal["global", "local"] = "global"
    min_sites: int = 1
    inject_failure: FailureConfig = field(default_factory=FailureConfig)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.iters_per_round < 1:
            raise ValueError("federation.rounds and federation.iters_per_round must be >= 1")

    @property
    def total_iters(self) -> int:
        return self.rounds * self.iters_per_round


@dataclass
class ALAConfig:
    """Learnable (element-wise) aggregation, as released: ``theta = theta_G + W * (theta_old - theta_G)`` on the
    parameters matching ``pattern`` (default: ``out_conv|up1|up2|up3|up4|mlp`` for UNetUniV5, the decoder for the
    plain UNet), ``W <- clip(W - eta * dL/dtheta * (theta_old - theta_G), 0, 1)`` per batch, one pass over the local
    data per call; the first call repeats passes until std(last ``num_pre_loss`` losses) < ``threshold`` (at most
    ``max_start_epochs``, ours). Skipped while the site has done <= ``warmup_iters`` local iterations. W restarts at
    1 every call as released; ``persist_weights`` keeps it across rounds (FedALA's intent).

    ``init``: where W starts (on the first call, or on every call without ``persist_weights``): ``released`` W = 1,
    i.e. at theta_old, the site's own last model (the released client deep-copies its model before theta_G is
    loaded); ``global`` W = 0, i.e. at theta_G (ours for FedLPPA: FedALA's rule, Zhang et al. AAAI 2023, which writes
    ``theta = theta_old + W_F * (theta_G - theta_old)`` with W_F = 1 - W initialised to ones; with
    ``persist_weights=true`` this is FedALA's ALA: start at the global model, W kept across rounds).

    ``granularity``: ``element`` (as released and in FedALA's ``ALA.py``: W has the shape of every parameter) or
    ``tensor`` (ours: one scalar W per parameter tensor, i.e. per layer weight/bias, stepped by its exact gradient
    ``sum(dL/dtheta * (theta_old - theta_G))``; the element-wise step at ``eta = 1`` is of order 1e-5 per batch on
    the CPU configs, so an element-wise W never leaves its start)."""

    enabled: bool = True
    init: Literal["released", "global"] = "released"
    granularity: Literal["element", "tensor"] = "element"
    eta: float = 1.0
    warmup_iters: int = 50
    threshold: float = 0.1
    num_pre_loss: int = 10
    max_start_epochs: int = 50
    persist_weights: bool = False
    pattern: str = ""


@dataclass
class RuntimeConfig(CommonRuntime):
    """``threads``: intra-op threads of a client step (1 = results independent of the process running a client;
    0 = torch default). ``pool``: worker processes of ``reproduce.py``. ``amp``: ``off`` only (clients train,
    run ALA and score in float32, as released); ``compile``: ``false`` only. ``device``: where every client runs
    (``cuda:<local rank>`` under torchrun)."""

    threads: int = 1
    progress: bool = False
    pool: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        # clients train in float32, eager: keys that would ask for more are refused, not ignored
        refuse_unsupported(self, amp=False, compile=False, project="fedlppa")


@dataclass
class ClientResourcesConfig:
    """What the Flower Simulation Engine reserves for one ClientApp (``flower_app.backend_config`` turns this into
    ``run_simulation``'s ``backend_config={"client_resources": ...}``): ``num_cpus`` cores and ``num_gpus``, the
    share of one GPU (0 = CPU clients; 0.25 = four clients on a GPU at once). The sequential driver, torchrun and
    a deployment (one SuperNode per site, its own hardware) do not read it."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.num_cpus <= 0:
            raise ValueError(f"client_resources.num_cpus must be > 0 (cores per simulated client), got "
                             f"{self.num_cpus}")
        if not 0.0 <= self.num_gpus <= 1.0:
            raise ValueError(f"client_resources.num_gpus is the share of one GPU a client uses, in [0, 1] (a client "
                             f"trains on one device), got {self.num_gpus}")


@dataclass
class EvalConfig:
    """Per-image metrics of the test split. ``empty_rule``: ``common`` (the repository policy: an empty prediction
    scores Dice 0 and HD95 = image diagonal), ``official_val`` (validation script: images whose metrics are all
    zero are left out of the mean) or ``official_test`` (test script: an empty prediction becomes a radius-1 disc
    at the image centre before scoring). ``site``: whose personalised model ``eval.py --predict`` uses."""

    empty_rule: Literal["common", "official_val", "official_test"] = "common"
    surface: bool = True
    overlays: int = 2
    site: str = "a"


@dataclass
class Config:
    experiment: str = "default"
    seed: int = 2022
    runs_root: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    ala: ALAConfig = field(default_factory=ALAConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    client_resources: ClientResourcesConfig = field(default_factory=ClientResourcesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        method, arch = self.federation.method, self.model.arch
        if arch not in ("auto", resolved_arch(self)):
            raise ValueError(f"federation.method={method} trains model.arch={resolved_arch(self)}, not {arch}; "
                             f"leave model.arch=auto")
        if self.federation.inject_failure.site >= self.data.num_sites:
            raise ValueError(f"federation.inject_failure.site = {self.federation.inject_failure.site} but there are "
                             f"only {self.data.num_sites} sites")
        if self.client_resources.num_gpus > 0 and self.runtime.device == "cpu":
            raise ValueError(f"client_resources.num_gpus = {self.client_resources.num_gpus} reserves a GPU share for "
                             f"clients that runtime.device=cpu keeps on the CPU; set client_resources.num_gpus=0 or "
                             f"runtime.device=auto")
        if self.federation.min_sites > self.data.num_sites:
            raise ValueError(f"federation.min_sites = {self.federation.min_sites} > number of sites "
                             f"{self.data.num_sites}")


def resolved_arch(cfg: Config) -> str:
    """The network a method trains: FedLPPA's UNetUniV5, the plain UNet for every baseline."""
    return "unet_univ5" if cfg.federation.method == "fedlppa" else "unet"
