"""CUT / PatchNCE: closed form, shared patch ids, a tiny CUT trains with finite losses."""

import math

import torch

from yolocurvseg.synthesizer import CUTConfig, CUTModel, PatchSampleF, patch_nce_loss


def test_patchnce_equals_closed_form_on_orthonormal_patches():
    n, tau = 16, 0.07
    q = torch.eye(n)  # orthonormal patch features, q = k
    loss = patch_nce_loss(q, q.clone(), batch_size=1, tau=tau)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (n - 1) + math.exp(-10 / tau)))
    torch.testing.assert_close(loss, torch.full((n,), expected), rtol=1e-5, atol=1e-5)


def test_patchnce_negatives_come_from_the_same_image():
    q = torch.eye(8)
    # two images of 4 patches: image 2's positives equal image 1's -> no cross-image negatives may appear
    loss = patch_nce_loss(q[:8], q[:8].clone(), batch_size=2)
    expected = -math.log(math.exp(1 / 0.07) / (math.exp(1 / 0.07) + 3 + math.exp(-10 / 0.07)))
    torch.testing.assert_close(loss, torch.full((8,), expected), rtol=1e-5, atol=1e-5)


def test_patch_sampler_reuses_ids_and_normalises():
    f = PatchSampleF([3, 5], nc=8)
    feats = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    out, ids = f(feats, num_patches=10)
    out2, ids2 = f(feats, num_patches=10, ids=ids)
    assert all(torch.equal(a, b) for a, b in zip(ids, ids2))
    assert out[0].shape == (20, 8) and out[1].shape == (20, 8)
    torch.testing.assert_close(out[0].norm(dim=1), torch.ones(20))
    torch.testing.assert_close(out[0], out2[0])


def test_tiny_cut_trains_with_finite_losses():
    torch.manual_seed(0)
    cfg = CUTConfig(ngf=4, ndf=4, n_blocks=2, n_layers_d=2, nce_layers=[0, 4, 8, 12, 13], num_patches=16,
                    netf_nc=16)
    model = CUTModel(cfg)
    a = torch.rand(1, 1, 32, 32) * 2 - 1
    b = torch.rand(1, 1, 32, 32) * 0.5
    model.build_f(a)
    opt_g, opt_d = model.optimizers()
    before = [p.detach().clone() for p in model.netF.parameters()]
    for _ in range(5):
        losses = model.train_step(a, b, opt_g, opt_d)
        assert all(math.isfinite(v) for v in losses.values())
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(before, model.netF.parameters()))
    out = model.translate(torch.rand(1, 1, 62, 66))
    assert out.shape == (1, 1, 62, 66) and out.abs().max() <= 1
