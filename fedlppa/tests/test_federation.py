"""Algorithm core: FedAvg weights, the similarity-aggregated auxiliary decoder (= the released client-side rule),
ALA (limits, one hand-computed step, only its keys change, skip rule), schedule, client determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedlppa.engine import poly_lr
from fedlppa.federation import (
    Aggregator,
    ClientState,
    TrainReply,
    ala_update,
    aux_for_site,
    aux_keys,
    client_train,
    initial_global_state,
    personalised_model,
    weighted_average,
)
from fedlppa.losses import partial_cross_entropy
from fedlppa.model import UNet, UNetUniV5, ala_parameter_names, bn_buffer_keys
from fedlppa.pipeline import prepare_sites


def test_fedavg_weights_by_batches_and_rounds_integers():
    states = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}, {"w": torch.tensor([4.0, 8.0]),
                                                                       "n": torch.tensor(6)}]
    out = weighted_average(states, [1, 2], ["w", "n"])
    assert torch.allclose(out["w"], torch.tensor([3.0, 6.0])) and out["n"].dtype == torch.int64
    assert int(out["n"]) == 5


def _official_client_aux(global_list, client_aux_lists, cid, num_sites):
    """The released client-side rule, written from its description: the first two entries of the global list are
    p_D and p_U; s_ik = max(0, cos([p_D[k]; p_U], [p_D[i]; p_U])), s_ii = 1; aux_i = sum s_ik aux_k / sum s_ik."""
    p_d, p_u = global_list[0], global_list[1].reshape(-1)
    mine = np.concatenate([p_d[cid].reshape(-1), p_u])
    weights = []
    for k in range(num_sites):
        other = np.concatenate([p_d[k].reshape(-1), p_u])
        cos = float(mine @ other / (np.linalg.norm(mine) * np.linalg.norm(other)))
        weights.append(1.0 if k == cid else max(0.0, cos))
    return [sum(w * client_aux_lists[k][j] for k, w in enumerate(weights)) / sum(weights)
            for j in range(len(client_aux_lists[0]))]


def test_server_side_aux_equals_official_client_side_rule():
    torch.manual_seed(0)
    model = UNetUniV5(1, 2, 32, num_sites=4, channels=[8, 16, 16, 16, 16])
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        glob["distribution_prompts"].normal_()  # mixed signs: some similarities are clipped to 0
    keys = [k for k in aux_keys(glob) if glob[k].is_floating_point()]
    uploaded = {k: {key: torch.randn_like(glob[key]) for key in keys} for k in range(4)}
    for site in range(4):
        ours = aux_for_site(glob, uploaded, site, 4)
        ref = _official_client_aux([glob["distribution_prompts"].numpy(), glob["uni_prompt"].numpy()],
                                   [[uploaded[k][key].numpy() for key in keys] for k in range(4)], site, 4)
        for key, value in zip(keys, ref):
            assert np.allclose(ours[key].numpy(), value, atol=1e-6), key


def test_aux_mean_when_prompts_equal_and_own_when_orthogonal():
    model = UNetUniV5(1, 2, 32, num_sites=3, channels=[8, 16, 16, 16, 16])
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    key = next(k for k in aux_keys(glob) if k.endswith("out_conv.weight"))
    uploaded = {k: {key: torch.full_like(glob[key], float(k))} for k in range(3)}
    glob["distribution_prompts"][:] = 1.0
    assert torch.allclose(aux_for_site(glob, uploaded, 0, 3)[key], torch.full_like(glob[key], 1.0))
    glob["uni_prompt"].zero_()
    glob["distribution_prompts"].zero_()
    for k in range(3):
        glob["distribution_prompts"][k].view(-1)[k] = 1.0
    assert torch.equal(aux_for_site(glob, uploaded, 2, 3)[key], uploaded[2][key])
    assert torch.equal(aux_for_site(glob, uploaded, 2, 3, "adjacent")[key], uploaded[0][key])


def _ala_setup():
    torch.manual_seed(0)
    model = UNet(1, 2, [4, 8, 8, 8, 8])
    names = ala_parameter_names(model)
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    old = {k: (v + 0.05 * torch.randn_like(v)) if v.is_floating_point() else v for k, v in glob.items()}
    x, y = torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 16, 16))
    batches = [(x, torch.stack([y, y], 1))]
    loss = lambda m, xb, yb: partial_cross_entropy(m(xb), yb[:, 0], 2)  # noqa: E731
    return model, names, glob, old, batches, loss


def test_ala_limits_and_only_its_keys_change():
    model, names, glob, old, batches, loss = _ala_setup()
    model.load_state_dict(glob)
    ala_update(model, glob, old, names, batches, loss, eta=0.0)
    state = model.state_dict()
    assert all(torch.equal(state[n], old[n]) for n in names)  # W = 1 keeps theta_old
    others = [k for k in glob if k not in names]
    assert all(torch.equal(state[k], glob[k]) for k in others)  # encoder and BN buffers stay theta_G
    model.load_state_dict(glob)
    zeros = {n: torch.zeros_like(glob[n]) for n in names}
    ala_update(model, glob, old, names, batches, loss, eta=0.0, weights=zeros)
    assert all(torch.equal(model.state_dict()[n], glob[n]) for n in names)  # W = 0 takes theta_G


def _reference_grads(state: dict, batches: list, loss) -> dict[str, torch.Tensor]:
    """Gradients of the first ALA batch's loss for a plain UNet holding ``state`` (same seed as ala_update)."""
    ref = UNet(1, 2, [4, 8, 8, 8, 8])
    ref.load_state_dict(state)
    torch.manual_seed(1)
    ref.train()
    loss(ref, *batches[0]).backward()
    return {n: p.grad for n, p in ref.named_parameters()}


def test_ala_one_step_matches_hand_computation():
    model, names, glob, old, batches, loss = _ala_setup()
    grads = _reference_grads({**glob, **{n: old[n] for n in names}}, batches, loss)  # W = 1: ALA keys at theta_old
    expected = {n: torch.clamp(1 - 0.7 * grads[n] * (old[n] - glob[n]), 0, 1) for n in names}
    model.load_state_dict(glob)
    torch.manual_seed(1)
    w, losses = ala_update(model, glob, old, names, batches, loss, eta=0.7)
    assert len(losses) == 1
    for n in names:
        assert torch.allclose(w[n], expected[n], atol=1e-6), n
        assert torch.allclose(model.state_dict()[n], glob[n] + w[n] * (old[n] - glob[n]), atol=1e-6)


def test_ala_per_tensor_step_matches_hand_computation():
    """``per_tensor`` (``ala.granularity=tensor``): one scalar W per tensor, stepped by the exact gradient
    dL/dW = sum(dL/dtheta * (theta_old - theta_G)), from both starts (W = 1 released, W = 0 FedALA's)."""
    model, names, glob, old, batches, loss = _ala_setup()
    for w0, start in ((1.0, {**glob, **{n: old[n] for n in names}}), (0.0, glob)):
        grads = _reference_grads(start, batches, loss)
        expected = {n: torch.clamp(w0 - 30.0 * (grads[n] * (old[n] - glob[n])).sum(), 0, 1) for n in names}
        model.load_state_dict(glob)
        torch.manual_seed(1)
        w, _ = ala_update(model, glob, old, names, batches, loss, eta=30.0, w_init=w0, per_tensor=True)
        for n in names:
            assert w[n].shape == ()
            assert torch.allclose(w[n], expected[n], atol=1e-6), n
            assert torch.allclose(model.state_dict()[n], glob[n] + w[n] * (old[n] - glob[n]), atol=1e-6), n
        moved = [n for n in names if abs(float(w[n]) - w0) > 1e-4]
        assert moved, "a per-tensor W that cannot move makes this test vacuous"
    with pytest.raises(ValueError, match="granularity"):
        ala_update(model, glob, old, names, batches, loss, weights={n: torch.ones_like(glob[n]) for n in names},
                   per_tensor=True)


def test_ala_start_phase_repeats_until_stable():
    model, names, glob, old, batches, loss = _ala_setup()
    model.load_state_dict(glob)
    _, losses = ala_update(model, glob, old, names, batches, loss, eta=0.1, start_phase=True, num_pre_loss=3,
                           threshold=10.0, max_epochs=20)
    assert len(losses) == 4  # needs more than num_pre_loss passes
    _, capped = ala_update(model, glob, old, names, batches, loss, start_phase=True, threshold=0.0, max_epochs=5)
    assert len(capped) == 5


def test_schedule():
    assert 30000 // 5 == 6000
    assert poly_lr(0.01, 0, 30000) == 0.01
    assert poly_lr(0.01, 15000, 30000) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 30000, 30000) == 0.0


@pytest.fixture()
def lppa(ci_data, make_cfg):
    cfg = make_cfg(ci_data)
    specs, _ = prepare_sites(cfg)
    return cfg, specs


def test_client_train_deterministic_and_leaves_state(lppa):
    cfg, specs = lppa
    glob = initial_global_state(cfg)
    state = ClientState(1)
    a, sa = client_train(cfg, specs[1], state, glob, None, 1)
    b, _ = client_train(cfg, specs[1], state, glob, None, 1)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert state.iter_global == 0 and state.old_state is None and sa.iter_global == 2
    assert a.num_examples == 1 and np.isfinite(a.metrics["loss"])


def test_round_trip_encoders_shared_aux_personal(lppa):
    """After aggregation every site starts from the same encoder; aux decoders differ per site; after the ALA
    warm-up the personalised decoders differ from theta_G."""
    cfg, specs = lppa
    agg = Aggregator(cfg, initial_global_state(cfg))
    states = [ClientState(s.site) for s in specs]
    for rnd in (1, 2):
        replies: list[TrainReply] = []
        for s in specs:
            reply, states[s.site] = client_train(cfg, s, states[s.site], agg.global_state,
                                                 agg.aux_for_site(s.site, rnd), rnd)
            replies.append(reply)
        agg.aggregate(replies)
    models = [personalised_model(cfg, s, states[s.site], agg.global_state, agg.aux_for_site(s.site, 3), 3, False)
              for s in specs]
    enc = "encoder.in_conv.conv_conv.0.weight"
    aux = "decoder_auxiliary.out_conv.weight"
    main = "decoder.out_conv.weight"
    sd = [m.state_dict() for m in models]
    assert torch.equal(sd[0][enc], sd[1][enc]) and torch.equal(sd[0][enc], agg.global_state[enc])
    assert not torch.equal(sd[0][aux], sd[1][aux])
    assert not torch.equal(sd[0][main], agg.global_state[main])


def test_bn_buffer_keys_are_the_running_statistics_only():
    model = UNet(1, 2, [4, 8, 8, 8, 8])
    keys = bn_buffer_keys(model)
    assert keys and all(k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked") for k in keys)
    assert not set(keys) & set(dict(model.named_parameters()))
    assert len(keys) == 3 * sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("method", ["fedlppa", "fedavg"])
def test_local_bn_stats_keep_the_site_running_statistics(ci_data, make_cfg, method):
    """``federation.bn_stats=local``: the personalised model (trained and scored) carries the site's own BatchNorm
    buffers, never theta_G's averaged ones; the learned parameters still come from theta_G / ALA as released."""
    for mode in ("global", "local"):
        cfg = make_cfg(ci_data, f"federation.method={method}", f"federation.bn_stats={mode}")
        specs, _ = prepare_sites(cfg)
        agg = Aggregator(cfg, initial_global_state(cfg))
        states = [ClientState(s.site) for s in specs]
        for rnd in (1,):
            replies = []
            for s in specs:
                reply, states[s.site] = client_train(cfg, s, states[s.site], agg.global_state,
                                                     agg.aux_for_site(s.site, rnd), rnd)
                replies.append(reply)
            agg.aggregate(replies)
        s = specs[1]
        model = personalised_model(cfg, s, states[1], agg.global_state, agg.aux_for_site(1, 2), 2, False)
        sd, keys = model.state_dict(), bn_buffer_keys(model)
        if mode == "global":  # as released, the auxiliary decoder's buffers come with the aggregated aux decoder
            keys = [k for k in keys if not k.startswith("decoder_auxiliary.")]
        want = states[1].old_state if mode == "local" else agg.global_state
        other = agg.global_state if mode == "local" else states[1].old_state
        assert all(torch.equal(sd[k].cpu(), want[k]) for k in keys)
        assert not all(torch.equal(sd[k].cpu(), other[k]) for k in keys if k.endswith("running_mean"))
        enc = "encoder.in_conv.conv_conv.0.weight"
        assert torch.equal(sd[enc].cpu(), agg.global_state[enc])


def test_ala_global_init_is_fedala_rule_and_differs_from_released():
    """``w_init=0`` (``ala.init=global``) starts at theta_G and takes FedALA's step: with FedALA's
    ``theta = theta_old + W_F (theta_G - theta_old)``, W_F = 1 at the start, our W is 1 - W_F after every step.
    The released start (W = 1, theta_old) gives another model."""
    model, names, glob, old, batches, loss = _ala_setup()
    model.load_state_dict(glob)
    ala_update(model, glob, old, names, batches, loss, eta=0.0, w_init=0.0)
    assert all(torch.equal(model.state_dict()[n], glob[n]) for n in names)  # start point = the global model
    grads = _reference_grads(glob, batches, loss)  # FedALA: W_F = 1, theta = theta_old + (theta_G - theta_old)
    w_f = {n: torch.clamp(1 - 0.7 * grads[n] * (glob[n] - old[n]), 0, 1) for n in names}
    model.load_state_dict(glob)
    torch.manual_seed(1)
    w, _ = ala_update(model, glob, old, names, batches, loss, eta=0.7, w_init=0.0)
    global_start = {n: model.state_dict()[n].clone() for n in names}
    for n in names:
        assert torch.allclose(w[n], 1 - w_f[n], atol=1e-6), n
        assert torch.allclose(global_start[n], old[n] + w_f[n] * (glob[n] - old[n]), atol=1e-6), n
    model.load_state_dict(glob)
    torch.manual_seed(1)
    w_rel, _ = ala_update(model, glob, old, names, batches, loss, eta=0.7)
    assert float(torch.cat([v.flatten() for v in w_rel.values()]).mean()) > 0.9
    assert float(torch.cat([v.flatten() for v in w.values()]).mean()) < 0.1
    assert not all(torch.allclose(model.state_dict()[n], global_start[n]) for n in names)


@pytest.mark.parametrize("init", ["released", "global"])
def test_ala_init_option_sets_the_start_of_personalisation(ci_data, make_cfg, init):
    """Through the client: after ALA (round 2 on ci.yaml) the decoders of ``ala.init=global`` with persisted W
    stay near theta_G and those of the released rule near the site's own last model; the round's metrics carry
    the W statistics and the persisted W is the one ALA returned."""
    cfg = make_cfg(ci_data, f"ala.init={init}", "ala.persist_weights=true")
    specs, _ = prepare_sites(cfg)
    agg = Aggregator(cfg, initial_global_state(cfg))
    states = [ClientState(s.site) for s in specs]
    metrics = {}
    for rnd in (1, 2):
        replies = []
        for s in specs:
            reply, states[s.site] = client_train(cfg, s, states[s.site], agg.global_state,
                                                 agg.aux_for_site(s.site, rnd), rnd)
            replies.append(reply)
            metrics[(s.site, rnd)] = reply.metrics
        agg.aggregate(replies)
    assert "ala_w_mean" not in metrics[(0, 1)]  # round 1: no theta_old yet, ALA skipped
    m = metrics[(0, 2)]
    assert {"ala_w_mean", "ala_w_old", "ala_w_global", "ala_passes"} <= set(m)
    w = torch.cat([v.flatten() for v in states[0].ala_weights.values()])
    assert m["ala_w_mean"] == pytest.approx(float(w.mean()), abs=1e-6)
    if init == "global":
        assert m["ala_w_mean"] < 0.1 and m["ala_w_global"] > m["ala_w_old"]
    else:
        assert m["ala_w_mean"] > 0.9 and m["ala_w_old"] > m["ala_w_global"]
    model = personalised_model(cfg, specs[0], states[0], agg.global_state, agg.aux_for_site(0, 3), 3, False)
    key = "decoder.out_conv.weight"
    theta = model.state_dict()[key].cpu()
    to_global = float((theta - agg.global_state[key]).norm())
    to_old = float((theta - states[0].old_state[key]).norm())
    assert (to_global < to_old) == (init == "global")
