"""The algorithm core, shared by the sequential driver (fl_sequential.py) and the Flower apps (flower_app.py):
plain functions of tensors and small dataclasses, no Flower import, no file layout.

Round r (official ``code_v4/flower_common_v4_addprostate.py``, strategy FedUniV2.1, and its baselines):

1. server -> site k: the global state theta_G (and, for FedLPPA, the site's auxiliary decoder ``aux_for_site``);
2. the site builds its personalised model (``personalised_model``): FedAvg/FedProx load theta_G, FedBN keeps its
   BatchNorm layers, ``local`` keeps its own model; FedLPPA loads theta_G with the similarity-aggregated auxiliary
   decoder and runs the learnable aggregation ``ala_update`` on the decoders and the MLP, FedALA on the decoder;
3. ``client_train``: ``iters_per_round`` AdamW steps (optimiser new every round, poly learning rate per local
   iteration); randomness (batch order, augmentation, dropout, lambda) is seeded by (seed, site, round) and a
   client step runs on ``runtime.threads`` threads, so no result depends on the process that runs it;
4. ``Aggregator.aggregate``: FedAvg of every state-dict entry weighted by the number of batches of each site
   (``drop_last``), summed in site order; it keeps each site's uploaded auxiliary decoder for step 1.

``client_evaluate`` scores the model a site would start the next round with (its personalised model).

Under torchrun (centralised rows only: one pooled site, ``fl_sequential.check_world_size``) ``client_train`` wraps
the model in DDP, every rank trains on its slice of the global batch with the shared pCE, the ranks' parameters are
checked equal after the round and rank 0's state (its BatchNorm running statistics) is what every rank uploads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from common.runtime import all_gather_arrays, broadcast_object, dist_info, pick_device, reduce_mean, wrap_ddp
from fedlppa.data import SiteData
from fedlppa.engine import (
    batch_at,
    dice_fg,
    distributed,
    epoch_batches,
    evaluate,
    main_logits,
    num_batches,
    poly_lr,
    rank_share,
    train_iterations,
)
from fedlppa.losses import fedlppa_loss, partial_cross_entropy, pls_weight, shared_partial_cross_entropy
from fedlppa.model import ala_parameter_names, bn_buffer_keys, build_model, is_bn_key
from fedlppa.settings import Config, resolved_arch

__all__ = ["ClientState", "SiteSpec", "TrainReply", "ClientFailureError", "FederationError", "initial_global_state",
           "make_site_model", "client_device", "seed_client", "personalised_model", "ala_update", "ala_weight_stats",
           "client_train", "check_replicas", "client_evaluate", "aux_keys", "aux_for_site", "prompt_similarity",
           "weighted_average", "Aggregator"]

AUX_PREFIX = "decoder_auxiliary."


class ClientFailureError(RuntimeError):
    """A site that failed during a round (also the injected failure of ``federation.inject_failure``)."""


class FederationError(RuntimeError):
    """The federation cannot go on; the message names site, round, reason and the checkpoint to resume from."""


@dataclass
class SiteSpec:
    """What a site knows about itself: index, weak-label type and its data."""

    site: int
    sup_type: str
    data: SiteData


@dataclass
class ClientState:
    """Per-site state that lives between rounds: local iterations done (the batch-stream position), the model the
    site trained last round (theta_old), whether ALA's start phase ran, and W when ``ala.persist_weights``."""

    site: int
    iter_global: int = 0
    rounds_done: int = 0
    old_state: dict[str, torch.Tensor] | None = None
    ala_started: bool = False
    ala_weights: dict[str, torch.Tensor] | None = None

    def to_dict(self) -> dict:
        return {"site": self.site, "iter_global": self.iter_global, "rounds_done": self.rounds_done,
                "old_state": self.old_state, "ala_started": self.ala_started, "ala_weights": self.ala_weights}

    @classmethod
    def from_dict(cls, data: Mapping) -> ClientState:
        return cls(int(data["site"]), int(data["iter_global"]), int(data["rounds_done"]), data.get("old_state"),
                   bool(data["ala_started"]), data.get("ala_weights"))


@dataclass
class TrainReply:
    """What a site uploads: its full state dict, the FedAvg weight (#batches per epoch) and scalar metrics."""

    site: int
    state: dict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def _clone(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy: states travel and are averaged on CPU whatever device a client trains on."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def client_device(cfg: Config) -> torch.device:
    """Where a client trains and evaluates (``runtime.device``: ``auto`` = CUDA when present, ``cuda:<local rank>``
    under torchrun)."""
    return pick_device(cfg.runtime.device, dist_info().local_rank)


def _on(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[0].to(device), batch[1].to(device)


def make_site_model(cfg: Config, site: int, sup_type: str) -> torch.nn.Module:
    d = cfg.data
    return build_model(cfg.model, d.in_channels, d.num_classes, d.image_size, d.num_sites, site, sup_type,
                       arch=resolved_arch(cfg))


def initial_global_state(cfg: Config) -> dict[str, torch.Tensor]:
    """theta_0: the randomly initialised network (seeded by ``cfg.seed``), the same start for every site."""
    torch.manual_seed(cfg.seed)
    return _clone(make_site_model(cfg, 0, cfg.data.sup_types[0]).state_dict())


def seed_client(cfg: Config, site: int, rnd: int, stream: int = 0) -> np.random.Generator:
    """Seed torch (dropout) from (seed, site, round, stream); return a numpy generator of the same stream. Under
    torchrun the rank joins the entropy (each rank's slice of the batch gets its own dropout masks)."""
    seq = np.random.SeedSequence([cfg.seed, site, rnd, stream, *([dist_info().rank] if distributed() else [])])
    torch.manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] % (2**63)))
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    return np.random.default_rng(seq)


def _batch_kwargs(cfg: Config) -> dict:
    return {"augment": cfg.data.augment, "image_fill": cfg.data.image_fill, "ignore": cfg.data.num_classes}


# --------------------------------------------------------------------------------------------- ALA
def ala_update(model: torch.nn.Module, global_state: Mapping[str, torch.Tensor],
               old_state: Mapping[str, torch.Tensor], names: Sequence[str],
               batches: Sequence[tuple[torch.Tensor, torch.Tensor]], loss_fn: Callable, *, eta: float = 1.0,
               start_phase: bool = False, threshold: float = 0.1, num_pre_loss: int = 10, max_epochs: int = 50,
               weights: Mapping[str, torch.Tensor] | None = None, w_init: float = 1.0, per_tensor: bool = False
               ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Learnable element-wise aggregation as released (FedALA with W on theta_old - theta_G).

    ``model`` holds theta_G; for each parameter in ``names``: ``theta = theta_G + W * (theta_old - theta_G)`` and
    per batch ``W <- clip(W - eta * dL/dtheta * (theta_old - theta_G), 0, 1)`` with ``L = loss_fn(model, x, y)``.
    One pass over ``batches``; in the start phase passes repeat until the std of the last ``num_pre_loss`` pass
    losses is below ``threshold`` (at most ``max_epochs``). W starts at ``weights`` or, without them, at ``w_init``
    everywhere (1: theta_old, as released; 0: theta_G, FedALA's start, whose W_F is 1 - W). The model is left at the
    final theta with the BatchNorm buffers it came with. ``per_tensor`` (ours): one scalar W per parameter tensor
    instead of one per element, stepped by its exact gradient ``dL/dW = sum(dL/dtheta * (theta_old - theta_G))``
    (W of 0-dim tensors). Returns (W, the loss of the last batch of every pass)."""
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    base = {n: global_state[n].detach().to(device, copy=True) for n in names}
    delta = {n: old_state[n].detach().to(device) - base[n] for n in names}
    shape = {n: () if per_tensor else base[n].shape for n in names}
    w = {n: (weights[n].to(device, copy=True) if weights is not None
             else torch.full(shape[n], float(w_init), dtype=base[n].dtype, device=device)) for n in names}
    bad = [n for n in names if w[n].shape != shape[n]]
    if bad:
        raise ValueError(f"ALA weights of {bad[0]} have shape {tuple(w[bad[0]].shape)}, expected {tuple(shape[bad[0]])}"
                         f" (ala.granularity changed between rounds? start a new run)")
    buffers = {k: v.clone() for k, v in model.state_dict().items() if k not in params}
    model.train()
    losses: list[float] = []

    def assign() -> None:
        with torch.no_grad():
            for n in names:
                params[n].copy_(base[n] + w[n] * delta[n])

    assign()
    for _ in range(max_epochs if start_phase else 1):
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model, x.to(device), y.to(device))
            loss.backward()
            with torch.no_grad():
                for n in names:
                    if params[n].grad is not None:
                        step = params[n].grad * delta[n]
                        w[n] = torch.clamp(w[n] - eta * (step.sum() if per_tensor else step), 0, 1)
            assign()
        losses.append(float(loss.detach()))
        if not start_phase or (len(losses) > num_pre_loss and np.std(losses[-num_pre_loss:]) < threshold):
            break
    model.zero_grad(set_to_none=True)
    model.load_state_dict({**model.state_dict(), **buffers})
    return {n: v.cpu() for n, v in w.items()}, losses


def ala_weight_stats(weights: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Summary of W over all ALA values: ``ala_w_mean``, ``ala_w_old`` (fraction >= 0.999: theta_old kept) and
    ``ala_w_global`` (fraction <= 0.001: theta_G taken); everything else is a learned mixture. With one W per
    tensor the statistics are over tensors (each counted once)."""
    w = torch.cat([v.detach().flatten().float().cpu() for v in weights.values()])
    return {"ala_w_mean": float(w.mean()), "ala_w_old": float((w >= 0.999).float().mean()),
            "ala_w_global": float((w <= 0.001).float().mean())}


def _ala_due(cfg: Config, state: ClientState, global_state: Mapping[str, torch.Tensor], rnd: int) -> bool:
    if cfg.federation.method not in ("fedlppa", "fedala") or not cfg.ala.enabled or state.old_state is None:
        return False
    if rnd * cfg.federation.iters_per_round <= cfg.ala.warmup_iters:  # official: skipped while iter_global <= 50
        return False
    first = next(iter(ala_names_cache(cfg)))
    return not torch.equal(global_state[first], state.old_state[first])  # "first parameter did not change"


_NAMES: dict[tuple, list[str]] = {}


def ala_names_cache(cfg: Config) -> list[str]:
    """Names of the ALA parameters of this config's network (pattern from ``ala.pattern`` or the default)."""
    key = (resolved_arch(cfg), tuple(cfg.model.channels), cfg.model.prompts, cfg.ala.pattern, cfg.data.num_sites)
    if key not in _NAMES:
        with torch.device("meta"):
            model = make_site_model(cfg, 0, cfg.data.sup_types[0])
        _NAMES[key] = ala_parameter_names(model, cfg.ala.pattern or None)
    return _NAMES[key]


def _pce_loss(cfg: Config) -> Callable:
    return lambda model, x, y: partial_cross_entropy(main_logits(model(x)), y[:, 0], cfg.data.num_classes)


# --------------------------------------------------------------------------------------------- client
def personalised_model(cfg: Config, spec: SiteSpec, state: ClientState, global_state: Mapping[str, torch.Tensor],
                       aux: Mapping[str, torch.Tensor] | None, rnd: int, update_state: bool,
                       ala_log: dict[str, float] | None = None) -> torch.nn.Module:
    """The model site ``spec.site`` trains in round ``rnd`` (module docstring, step 2). With ``update_state`` the
    ALA bookkeeping of ``state`` (start phase done, persisted W) is updated in place; when ALA runs, ``ala_log``
    (if given) receives ``ala_weight_stats`` of the resulting W and the number of passes."""
    method = cfg.federation.method
    model = make_site_model(cfg, spec.site, spec.sup_type)
    if method == "local" and state.old_state is not None:
        model.load_state_dict(state.old_state)
        return model.to(client_device(cfg))
    merged = dict(global_state)
    if method == "fedbn" and state.old_state is not None:
        merged.update({k: v for k, v in state.old_state.items() if is_bn_key(model, k)})
    if aux is not None:
        merged.update(aux)
    if cfg.federation.bn_stats == "local" and state.old_state is not None:
        # ours: the site keeps its own BatchNorm running statistics, the auxiliary decoder's too (FedALA's code
        # only ever overwrites parameters; SiloBN); the released FedLPPA client loads theta_G's averaged buffers
        merged.update({k: state.old_state[k] for k in bn_buffer_keys(model)})
    model.load_state_dict(merged)
    model.to(client_device(cfg))
    if _ala_due(cfg, state, merged, rnd):
        batches = epoch_batches(spec.data.train, cfg.optim.batch_size, cfg.seed, spec.site, rnd, stream=1,
                                **_batch_kwargs(cfg))
        a = cfg.ala
        w, losses = ala_update(model, merged, state.old_state, ala_names_cache(cfg), batches, _pce_loss(cfg),
                               eta=a.eta, start_phase=not state.ala_started, threshold=a.threshold,
                               num_pre_loss=a.num_pre_loss, max_epochs=a.max_start_epochs,
                               weights=state.ala_weights if a.persist_weights else None,
                               w_init=1.0 if a.init == "released" else 0.0, per_tensor=a.granularity == "tensor")
        if ala_log is not None:
            ala_log.update({**ala_weight_stats(w), "ala_passes": float(len(losses))})
        if update_state:
            state.ala_started = True
            state.ala_weights = w if a.persist_weights else None
    return model


def _loss_fn(cfg: Config, spec: SiteSpec, global_state: Mapping[str, torch.Tensor], lam_rng: np.random.Generator
             ) -> Callable:
    c = cfg.data.num_classes
    method = cfg.federation.method
    anchors = None
    if method == "fedprox":
        device = client_device(cfg)
        anchors = {k: v.detach().to(device) for k, v in global_state.items() if v.is_floating_point()}

    def loss_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, t: int) -> dict:
        target, mask = y[:, 0], y[:, 1]
        if method == "fedlppa":
            out = model(x)
            terms = fedlppa_loss(out.logits, out.aux_logits, out.fused, target, spec.site, float(lam_rng.uniform()),
                                 cfg.loss, c, pls_weight(cfg.loss, t, cfg.federation.total_iters))
            return {"loss": terms.total, "pce": terms.pce, "uni": terms.uni, "pls": terms.pls,
                    "pseudo_dice": dice_fg(terms.pseudo, mask, c)}
        pce = shared_partial_cross_entropy if distributed() else partial_cross_entropy
        loss = pce(model(x), target, c)
        logs = {"pce": float(loss.detach())}
        if anchors is not None:
            prox = sum(((p - anchors[n]) ** 2).sum() for n, p in model.named_parameters())
            loss = loss + 0.5 * cfg.federation.fedprox_mu * prox
        return {"loss": loss, **logs}

    return loss_fn


def _failure_hook(cfg: Config, site: int, rnd: int, start: int) -> Callable[[int], None]:
    f = cfg.federation.inject_failure

    def hook(t: int) -> None:
        if f.site == site and f.round == rnd and t - start == f.after_iters:
            raise ClientFailureError(f"injected failure: site {site}, round {rnd}, after {f.after_iters} iterations")

    return hook


def client_train(cfg: Config, spec: SiteSpec, state: ClientState, global_state: Mapping[str, torch.Tensor],
                 aux: Mapping[str, torch.Tensor] | None, rnd: int) -> tuple[TrainReply, ClientState]:
    """One round of local training of site ``spec.site``; returns its reply and its new state (``state`` itself
    is not modified, so a failed round leaves it as it was)."""
    lam_rng = seed_client(cfg, spec.site, rnd)
    new_state = copy.copy(state)
    ala_log: dict[str, float] = {}
    model = personalised_model(cfg, spec, new_state, global_state, aux, rnd, update_state=True, ala_log=ala_log)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    cache: dict[int, list] = {}
    start, total = state.iter_global, cfg.federation.total_iters
    device = client_device(cfg)
    logs = train_iterations(
        wrap_ddp(model, device), optimizer, start, cfg.federation.iters_per_round,
        lambda t: _on(rank_share(batch_at(cache, spec.data.train, o.batch_size, cfg.seed, spec.site, t,
                                          **_batch_kwargs(cfg))), device),
        _loss_fn(cfg, spec, global_state, lam_rng), lambda t: poly_lr(o.lr, t, total, o.poly_power),
        _failure_hook(cfg, spec.site, rnd, start))
    if distributed():
        check_replicas(model, rnd)
    uploaded = broadcast_object(_clone(model.state_dict()))  # rank 0's BatchNorm statistics on every rank
    new_state.iter_global = start + cfg.federation.iters_per_round
    new_state.rounds_done = rnd
    new_state.old_state = uploaded
    metrics = {**{k: reduce_mean(np.nanmean([log[k] for log in logs])) for k in logs[0]}, **ala_log}
    nb = num_batches(len(spec.data.train), o.batch_size)
    return TrainReply(spec.site, uploaded, nb, metrics), new_state


def check_replicas(model: torch.nn.Module, rnd: int) -> None:
    """Raise unless every rank holds the same parameters after round ``rnd`` (DDP averaged the gradients). Compared
    per tensor through its float64 sum and sum of squares, which bit-identical tensors reproduce exactly. The
    BatchNorm running statistics may differ (each rank saw its own slice); rank 0's replace them."""
    mine = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().square().sum()])
                        for p in model.parameters()]).flatten().cpu().numpy()  # a fingerprint per tensor
    every = all_gather_arrays(mine[None])
    gap = float(np.abs(every - every[0]).max())
    if gap != 0.0:
        raise FederationError(f"round {rnd}: the {len(every)} ranks hold different parameters after the round (max "
                              f"|difference| {gap:.3g}); DDP did not synchronise the gradients")


def client_evaluate(cfg: Config, spec: SiteSpec, state: ClientState, global_state: Mapping[str, torch.Tensor],
                    aux: Mapping[str, torch.Tensor] | None, rnd: int, keep: list | None = None
                    ) -> tuple[list[dict], dict[str, float]]:
    """Per-image test metrics of the personalised model after round ``rnd`` (= the start model of round rnd+1)."""
    seed_client(cfg, spec.site, rnd + 1)
    probe = copy.copy(state)
    model = personalised_model(cfg, spec, probe, global_state, aux, rnd + 1, update_state=False)
    return evaluate(model, spec.data.test, cfg.data.num_classes, cfg.eval.empty_rule, cfg.eval.surface,
                    device=client_device(cfg), keep=keep)


# --------------------------------------------------------------------------------------------- server
def aux_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.startswith(AUX_PREFIX)]


def prompt_similarity(global_state: Mapping[str, torch.Tensor], num_sites: int) -> torch.Tensor:
    """``S[i, k] = max(0, cos([p_D[k]; p_U], [p_D[i]; p_U]))`` from theta_G, diagonal 1 (K x K)."""
    p_d, p_u = global_state["distribution_prompts"], global_state["uni_prompt"].flatten()
    vecs = torch.stack([torch.cat([p_d[k].flatten(), p_u]) for k in range(num_sites)])
    sim = F.cosine_similarity(vecs[:, None], vecs[None], dim=-1).clamp_min(0)
    sim.fill_diagonal_(1.0)
    return sim


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
                     keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """``sum_i w_i theta_i / sum_i w_i`` per key, summed in the given order; integer entries are rounded."""
    total = float(sum(weights))
    out = {}
    for key in keys:
        acc = None
        for state, w in zip(states, weights):
            term = state[key].double() * (w / total)
            acc = term if acc is None else acc + term
        ref = states[0][key]
        out[key] = acc.round().to(ref.dtype) if not ref.is_floating_point() else acc.to(ref.dtype)
    return out


def aux_for_site(global_state: Mapping[str, torch.Tensor], uploaded: Mapping[int, Mapping[str, torch.Tensor]],
                 site: int, num_sites: int, dual_init: str = "aggregated", rng: np.random.Generator | None = None,
                 prompts: bool = True) -> dict[str, torch.Tensor]:
    """Site ``site``'s auxiliary decoder from the uploaded ones (``num_batches_tracked`` from theta_G).

    ``aggregated``: ``sum_k s_ik aux_k / sum_k s_ik`` with the prompt similarity of theta_G (plain mean without
    prompts); ``nearest``: the most similar other site's; ``adjacent``: site ``(i + 1) mod K``'s; ``random``: a
    random other site's. Before any upload: theta_G's."""
    keys = aux_keys(global_state)
    if not uploaded:
        return {k: global_state[k].clone() for k in keys}
    sites = sorted(uploaded)
    sim = prompt_similarity(global_state, num_sites)[site] if prompts else torch.ones(num_sites)
    others = [k for k in sites if k != site] or sites
    if dual_init == "aggregated":
        weights = [float(sim[k]) for k in sites]
    else:
        if dual_init == "nearest":
            chosen = max(others, key=lambda k: float(sim[k]))
        elif dual_init == "adjacent":
            chosen = (site + 1) % num_sites if (site + 1) % num_sites in uploaded else others[0]
        else:
            chosen = others[int((rng or np.random.default_rng()).integers(len(others)))]
        weights = [1.0 if k == chosen else 0.0 for k in sites]
    float_keys = [k for k in keys if global_state[k].is_floating_point() and k in uploaded[sites[0]]]
    out = weighted_average([uploaded[k] for k in sites], weights, float_keys)
    out.update({k: global_state[k].clone() for k in keys if k not in out})
    return out


class Aggregator:
    """Server state: theta_G and (FedLPPA) each site's last uploaded auxiliary decoder."""

    def __init__(self, cfg: Config, global_state: Mapping[str, torch.Tensor]):
        self.cfg = cfg
        self.global_state = _clone(global_state)
        self.uploaded_aux: dict[int, dict[str, torch.Tensor]] = {}

    def aggregate(self, replies: Sequence[TrainReply]) -> dict[str, torch.Tensor]:
        """FedAvg by #batches in site order (``local``: theta_G stays theta_0); stores the uploaded aux decoders."""
        replies = sorted(replies, key=lambda r: r.site)
        if self.cfg.federation.method == "fedlppa":
            for r in replies:
                self.uploaded_aux[r.site] = {k: r.state[k].clone() for k in aux_keys(r.state)}
        if replies and self.cfg.federation.method != "local":
            self.global_state = weighted_average([r.state for r in replies], [r.num_examples for r in replies],
                                                 list(self.global_state))
        return self.global_state

    def aux_for_site(self, site: int, rnd: int) -> dict[str, torch.Tensor] | None:
        if self.cfg.federation.method != "fedlppa":
            return None
        rng = np.random.default_rng([self.cfg.seed, site, rnd, 3])
        return aux_for_site(self.global_state, self.uploaded_aux, site, self.cfg.data.num_sites,
                            self.cfg.federation.dual_init, rng, self.cfg.model.prompts)

    def similarity(self) -> np.ndarray | None:
        if self.cfg.federation.method != "fedlppa" or not self.cfg.model.prompts:
            return None
        return prompt_similarity(self.global_state, self.cfg.data.num_sites).numpy()

    def state_dict(self) -> dict:
        return {"global": self.global_state, "uploaded_aux": {str(k): v for k, v in self.uploaded_aux.items()}}

    def load_state_dict(self, data: Mapping) -> None:
        self.global_state = dict(data["global"])
        self.uploaded_aux = {int(k): dict(v) for k, v in data["uploaded_aux"].items()}

    @staticmethod
    def check_sites(data: Mapping, num_sites: int, where: str) -> None:
        p_d = data["global"].get("distribution_prompts")
        if p_d is not None and p_d.shape[0] != num_sites:
            raise FederationError(f"{where} was written for {p_d.shape[0]} sites, the config has {num_sites}; "
                                  f"resume with the same data.domains or start a new run")

