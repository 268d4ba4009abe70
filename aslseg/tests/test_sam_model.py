"""SAM wrapper: exact parameter counts (meta device), LoRA, trainable sets and gradients, interpolation, checkpoints,
prompt decoding and a short overfit whose mask lands inside its box."""

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry

from aslseg.prompts import boxes_from_mask, component_points, components, jitter_box
from aslseg.sam_model import (
    LORA_VIT_B_PARAMS,
    TINY_PARAMS,
    VIT_B_PARAMS,
    SAMSegmenter,
    add_lora,
    build_sam,
    build_tiny_sam,
    count_trainable,
    resize_sam,
    set_trainable,
)
from aslseg.sam_tuning import SAMExample, finetune_sam, sam_train_step
from aslseg.settings import SAMConfig
from common.weights import PretrainedWeightsError


def _n(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def vit_b_meta():
    with torch.device("meta"):
        return sam_model_registry["vit_b"](checkpoint=None)


def test_vit_b_parameter_counts(vit_b_meta):
    sam = vit_b_meta
    assert _n(sam) == VIT_B_PARAMS["total"] == 93_735_472
    assert _n(sam.image_encoder) == 89_670_912
    assert _n(sam.prompt_encoder) == 6_220
    assert _n(sam.mask_decoder) == 4_058_340
    assert count_trainable(sam) == _n(sam)
    set_trainable(sam, "decoder")
    assert count_trainable(sam) == 4_058_340


def test_vit_b_lora_counts():
    with torch.device("meta"):
        sam = sam_model_registry["vit_b"](checkpoint=None)
        lora = add_lora(sam, 4)
    assert sum(p.numel() for p in lora) == LORA_VIT_B_PARAMS == 147_456
    set_trainable(sam, "lora")
    assert count_trainable(sam) == 147_456 + 6_220 + 4_058_340 == 4_212_016


def test_tiny_parameter_count_and_logit_size():
    with torch.device("meta"):
        assert _n(build_tiny_sam()) == TINY_PARAMS == 1_779_392
    model = SAMSegmenter(build_tiny_sam())
    emb = model.embed(torch.rand(2, 1, 64, 64))
    assert emb.shape == (2, 128, 16, 16)
    logits, iou = model.decode(emb[:1], torch.tensor([[4.0, 4.0, 20.0, 30.0], [30, 30, 60, 60]]), (64, 64))
    assert logits.shape == (2, 1, 64, 64) and iou.shape == (2, 1)
    assert model.sam.mask_decoder(emb[:1], model.sam.prompt_encoder.get_dense_pe(),
                                  *model.sam.prompt_encoder(None, torch.zeros(1, 4), None), False)[0].shape[-1] == 64


def test_lora_at_init_is_bitwise_equal_and_gradients_reach_only_trainable():
    torch.manual_seed(0)
    model = SAMSegmenter(build_tiny_sam())
    x = torch.rand(1, 1, 64, 64)
    before = model.embed(x)
    add_lora(model.sam, 4)
    assert torch.equal(before, model.embed(x))
    for mode in ("decoder", "lora", "full"):
        trainable = set_trainable(model.sam, mode)
        ids = {id(p) for p in trainable}
        model.zero_grad(set_to_none=True)
        logits, _ = model.decode(model.embed(x), torch.tensor([[10.0, 10.0, 40.0, 40.0]]), (64, 64))
        logits.sum().backward()
        for name, p in model.sam.named_parameters():
            if id(p) not in ids:
                assert p.grad is None, f"{mode}: frozen {name} got a gradient"
        grads = [p for p in trainable if p.grad is not None and p.grad.abs().sum() > 0]
        assert grads, mode
        if mode == "lora":
            assert any(p.grad is not None for n, p in model.sam.named_parameters() if ".b_q." in n)
            assert all(p.grad is None for n, p in model.sam.named_parameters() if n.endswith("qkv.qkv.weight"))


def test_resize_interpolates_only_global_blocks():
    sam = build_tiny_sam()
    window_tables = {i: b.attn.rel_pos_h.shape for i, b in enumerate(sam.image_encoder.blocks) if b.window_size}
    resize_sam(sam, 256)
    assert sam.image_encoder.pos_embed.shape == (1, 32, 32, 128)
    for i, block in enumerate(sam.image_encoder.blocks):
        if block.window_size:
            assert block.attn.rel_pos_h.shape == window_tables[i]
        else:
            assert block.attn.rel_pos_h.shape[0] == block.attn.rel_pos_w.shape[0] == 63
    model = SAMSegmenter(sam)
    emb = model.embed(torch.rand(1, 1, 64, 64))
    assert emb.shape == (1, 128, 32, 32)
    logits, _ = model.decode(emb, torch.tensor([[4.0, 4.0, 20.0, 30.0]]), (64, 64))
    assert logits.shape == (1, 1, 64, 64)
    # a constant pos-embed stays constant after interpolation
    sam2 = build_tiny_sam()
    torch.nn.init.constant_(sam2.image_encoder.pos_embed, 0.25)
    resize_sam(sam2, 192)
    assert torch.allclose(sam2.image_encoder.pos_embed, torch.full_like(sam2.image_encoder.pos_embed, 0.25))


def test_checkpoint_by_path_none_hub_missing_and_mismatch(tmp_path):
    ref = build_tiny_sam()
    path = tmp_path / "tiny.pth"
    torch.save(ref.state_dict(), path)
    loaded = build_sam(SAMConfig(arch="tiny", checkpoint=str(path)))
    for (k, a), b in zip(ref.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert build_sam(SAMConfig(arch="tiny", checkpoint="none")) is not None
    with pytest.raises(PretrainedWeightsError, match="sam_vit_b_01ec64.pth"):
        build_sam(SAMConfig(arch="vit_b", checkpoint="hub"))
    with pytest.raises(PretrainedWeightsError, match="file not found"):
        build_sam(SAMConfig(arch="tiny", checkpoint=str(tmp_path / "nope.pth")))
    with pytest.raises(PretrainedWeightsError, match="pretrain_sam.py"):
        build_sam(SAMConfig(arch="tiny", checkpoint="pretrained"), pretrained_file=tmp_path / "absent.pth")
    state = ref.state_dict()
    state["image_encoder.pos_embed"] = torch.zeros(1, 8, 8, 128)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(PretrainedWeightsError, match="does not fit sam.arch"):
        build_sam(SAMConfig(arch="tiny", checkpoint=str(bad)))


def test_prompts_k_blobs_k_boxes():
    mask = np.zeros((64, 64), bool)
    mask[5:10, 5:12] = True
    mask[30:40, 40:44] = True
    mask[50:53, 10:13] = True
    mask[60, 60] = True  # speck below min_area
    boxes = boxes_from_mask(mask, min_area=4, margin=0)
    assert len(boxes) == 3
    for comp in components(mask, 4):
        rows, cols = np.nonzero(comp)
        assert any(b[0] <= cols.min() and b[2] >= cols.max() + 1 and b[1] <= rows.min() and b[3] >= rows.max() + 1
                   for b in boxes)
    assert boxes_from_mask(np.zeros((8, 8), bool)).shape == (0, 4)
    wide = boxes_from_mask(mask, 4, margin=3)
    assert (wide[:, :2] <= boxes[:, :2]).all() and (wide[:, 2:] >= boxes[:, 2:]).all()
    pts = component_points(mask, 4)
    for x, y in pts:
        assert mask[int(y), int(x)]
    jb = jitter_box(boxes[0], (64, 64), 0.02, np.random.default_rng(0))
    assert (jb[:2] <= boxes[0][:2]).all() and (jb[2:] >= boxes[0][2:]).all() and (jb[2:] - boxes[0][2:]).max() <= 1.3
    model = SAMSegmenter(build_tiny_sam())
    assert not model.predict(torch.rand(1, 64, 64), np.zeros((0, 4))).any()


def test_overfit_puts_the_mask_inside_its_box():
    torch.manual_seed(0)
    rr, cc = np.mgrid[:64, :64]
    target = ((rr - 20) ** 2 + (cc - 44) ** 2 <= 36).astype(np.float32)
    image = (0.3 + 0.4 * target + 0.02 * np.random.default_rng(0).standard_normal((64, 64))).astype(np.float32)
    model = SAMSegmenter(build_tiny_sam())
    params = set_trainable(model.sam, "all")
    opt = torch.optim.AdamW(params, lr=1e-3)
    box = boxes_from_mask(target > 0, margin=2)[0]
    x = torch.from_numpy(image)[None, None]
    for _ in range(30):
        sam_train_step(model, opt, x, [SAMExample(0, box, target)])
    prob = model.predict(x[0], box[None])
    pred = prob > 0.5
    assert pred.sum() > 20
    rows, cols = np.nonzero(pred)
    assert box[0] <= cols.mean() <= box[2] and box[1] <= rows.mean() <= box[3]
    inside = np.zeros_like(pred)
    inside[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = True
    assert (pred & inside).sum() / pred.sum() > 0.9


@pytest.mark.parametrize("mode", ["decoder", "lora"])
def test_finetune_runs_and_restores_frozen_state(mode):
    rng = np.random.default_rng(0)
    labels = np.zeros((3, 64, 64), np.float32)
    labels[0, 10:20, 10:20] = 1
    labels[1, 30:40, 35:50] = 1
    images = (0.5 - 0.2 * labels + 0.05 * rng.standard_normal(labels.shape)).astype(np.float32)
    ssl = labels.copy()
    ssl[2, 5:12, 5:12] = 1  # a false positive
    model = SAMSegmenter(build_tiny_sam())
    cfg = SAMConfig(finetune=mode, steps=3, batch_size=3, lr=1e-3, warmup=1, pseudo_box_prob=0.5)
    losses = finetune_sam(model, images, labels, ssl, cfg, min_area=4, margin=2, seed=0)
    assert len(losses) == 3 and np.isfinite(losses).all()


def test_batched_pairs_decode_equals_one_call_per_image():
    torch.manual_seed(1)
    model = SAMSegmenter(build_tiny_sam()).eval()
    emb = model.embed(torch.rand(3, 1, 64, 64))
    boxes = torch.tensor([[4.0, 4.0, 20.0, 30.0], [30, 30, 60, 60], [10, 40, 30, 62]])
    with torch.no_grad():
        pairs, iou = model.decode_pairs(emb, boxes, (64, 64))
        for i in range(3):
            one, one_iou = model.decode(emb[i:i + 1], boxes[i:i + 1], (64, 64))
            assert torch.allclose(pairs[i], one[0], atol=1e-5) and torch.allclose(iou[i], one_iou[0], atol=1e-5)


def test_margin_box_matches_the_inference_margin_and_stays_valid():
    from aslseg.prompts import margin_box

    tight = np.array([20.0, 10.0, 30.0, 16.0], np.float32)
    rng = np.random.default_rng(0)
    exact = margin_box(tight, (64, 64), 3, 0, rng)
    assert np.allclose(exact, [17, 7, 33, 19])
    boxes = np.stack([margin_box(tight, (64, 64), 3, 2, rng) for _ in range(200)])
    offsets = (tight - boxes) * np.array([1, 1, -1, -1])  # how far each edge moved outwards
    assert offsets.min() >= 1 - 1e-5 and offsets.max() <= 5 + 1e-5 and abs(offsets.mean() - 3) < 0.3
    edge = margin_box(np.array([0.0, 0.0, 1.0, 1.0]), (64, 64), 0, 5, rng)  # inward moves never invert the box
    assert edge[2] - edge[0] >= 1 and edge[3] - edge[1] >= 1 and (edge >= 0).all()


def test_box_prior_is_the_inscribed_ellipse_and_feeds_the_mask_prompt():
    from aslseg.prompts import box_prior
    from common.synthetic import ellipse_mask

    box = np.array([10.0, 20.0, 30.0, 30.0], np.float32)  # XYXY: columns 10-30, rows 20-30
    prior = box_prior(box[None], (64, 64))[0]
    assert (prior == ellipse_mask((64, 64), (24.5, 19.5), (5, 10))).all() and prior[25, 20] and not prior[20, 10]
    assert np.abs(prior.sum() - np.pi * 10 * 5) < 8
    torch.manual_seed(0)
    plain, prompted = SAMSegmenter(build_tiny_sam()).eval(), SAMSegmenter(build_tiny_sam(), mask_prompt="ellipse")
    prompted.load_state_dict(plain.state_dict())
    prompted.eval()
    dense = prompted.dense_prompt(torch.tensor([[10.0, 20.0, 30.0, 30.0], [0, 0, 8, 8]]), (64, 64))
    assert dense.shape == (2, 1, 64, 64) and set(dense.unique().tolist()) <= {-1.0, 1.0}
    assert plain.dense_prompt(torch.zeros(1, 4), (64, 64)) is None
    emb = plain.embed(torch.rand(2, 1, 64, 64))
    boxes = torch.tensor([[10.0, 20.0, 30.0, 30.0], [30, 30, 60, 60]])
    with torch.no_grad():
        a, _ = plain.decode(emb[:1], boxes, (64, 64))
        b, _ = prompted.decode(emb[:1], boxes, (64, 64))
        pairs, _ = prompted.decode_pairs(emb, boxes, (64, 64))
        one, _ = prompted.decode(emb[1:], boxes[1:], (64, 64))
    assert not torch.allclose(a, b)  # the dense prompt reaches the decoder
    assert torch.allclose(pairs[1], one[0], atol=1e-5)
    with pytest.raises(ValueError, match="mask_prompt"):
        SAMSegmenter(build_tiny_sam(), mask_prompt="box")


def test_pretrained_cache_key_includes_the_mask_prompt_but_not_the_curve(tmp_path):
    from aslseg.sam_prior import cache_path
    from aslseg.settings import SAMPretrainConfig

    cfg = SAMPretrainConfig(cache_dir=str(tmp_path))
    assert cache_path(cfg, 64, "none") != cache_path(cfg, 64, "ellipse")
    assert cache_path(cfg, 64) == cache_path(SAMPretrainConfig(cache_dir=str(tmp_path), eval_every=10), 64)
