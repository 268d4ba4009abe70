import pytest
import torch
from safetensors.torch import save_file

from common.weights import PretrainedWeightsError, create_timm_model, load_pretrained


def test_none_and_hub_without_network():
    model = create_timm_model("resnet10t", "none", num_classes=3)
    assert model.fc.out_features == 3
    with pytest.raises(PretrainedWeightsError, match=r"timm/vit_base_patch16_384.*model\.lpm\.pretrained=/path"):
        create_timm_model("vit_base_patch16_384", "hub", config_key="model.lpm.pretrained")
    with pytest.raises(PretrainedWeightsError, match="file not found"):
        create_timm_model("resnet10t", "/nonexistent/w.safetensors")


def test_local_file_loads_through_timm_with_pos_embed_resize(tmp_path):
    src = create_timm_model("vit_tiny_patch16_224", "none")
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    dst = create_timm_model("vit_tiny_patch16_224", str(tmp_path / "w.safetensors"), img_size=64)
    torch.testing.assert_close(dst.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert dst.pos_embed.shape[1] == 1 + (64 // 16) ** 2  # interpolated by timm's checkpoint filter


def test_load_pretrained_generic_module(tmp_path):
    net = torch.nn.Conv2d(1, 2, 3)
    assert load_pretrained(net, "none", what="x", source="y") is None
    with pytest.raises(PretrainedWeightsError, match="sam_vit_b_01ec64.pth.*model.sam.checkpoint"):
        load_pretrained(net, "hub", what="SAM ViT-B", source="sam_vit_b_01ec64.pth",
                        config_key="model.sam.checkpoint")
    other = torch.nn.Conv2d(1, 2, 3)
    torch.save({"module." + k: v for k, v in other.state_dict().items()}, tmp_path / "w.pth")
    report = load_pretrained(net, tmp_path / "w.pth", what="x", source="y")
    assert report == {"missing": [], "unexpected": [], "shape_mismatch": []}
    torch.testing.assert_close(net.weight, other.weight)
