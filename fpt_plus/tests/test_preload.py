"""Preloading (official preload.py): cache round trip, bitwise-equal logits of the cached and the online path in
fp32, unique keys, and clear errors for a cache of the wrong shape or from the other variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fpt_plus.data import CacheError
from fpt_plus.engine import prepare_batch
from fpt_plus.models.factory import build_model
from fpt_plus.pipeline import build_dataset, cache_for, make_loader, prepare_data, run_preload


def test_cached_and_online_logits_are_bitwise_equal(ci_root: Path, tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg(ci_root, f"data.preload_dir={tmp_path / 'cache'}", "data.preload_batch_size=4")
    bundle = prepare_data(cfg)
    cache = run_preload(cfg, bundle)
    records = bundle.splits["val"][:4]
    file = cache.path(records[0].key)
    tensors = load_file(str(file))
    lpm = cfg.model.lpm
    assert tensors["key_states"].shape == (2, lpm.num_heads, 13, lpm.embed_dim // lpm.num_heads)  # 65 tokens -> 13
    assert tensors["key_states"].dtype == torch.float32
    assert file.relative_to(cache.folder).as_posix() == records[0].key + ".safetensors"

    torch.manual_seed(0)
    online = build_model(cfg.model, bundle.num_classes, preloaded=False).eval()
    cached = build_model(cfg.model, bundle.num_classes, preloaded=True).eval()
    cached.load_state_dict(online.state_dict())
    assert cached.lpm is None
    ds_cached = build_dataset(cfg, bundle, "val", ("side", "keys", "values"), train=False, cache=cache,
                              records=records)
    ds_online = build_dataset(cfg, bundle, "val", ("side", "lpm"), train=False, records=records)
    b_cached = prepare_batch(next(iter(make_loader(ds_cached, 4, train=False, seed=0))), torch.device("cpu"))
    b_online = prepare_batch(next(iter(make_loader(ds_online, 4, train=False, seed=0))), torch.device("cpu"))
    with torch.no_grad():
        logits_cached = cached(b_cached["side"], b_cached["keys"], b_cached["values"])
        logits_online = online(b_online["side"], lpm=b_online["lpm"])
    assert torch.equal(logits_cached, logits_online)
    assert not torch.equal(logits_cached, torch.zeros_like(logits_cached))


def test_compiled_online_lpm_gives_the_cached_logits_and_stays_out_of_the_state_dict(
        ci_root: Path, tmp_path: Path, make_cfg) -> None:
    """``model.lpm.compile: freeze`` on the online path and in the preload writer: the logits of the eager path (to
    float tolerance: inductor reorders float sums), and the compiled LPM adds nothing to the checkpointed state."""
    cfg = make_cfg(ci_root, f"data.preload_dir={tmp_path / 'cache'}", "data.preload_batch_size=4",
                   "model.lpm.compile=freeze")
    bundle = prepare_data(cfg)
    cache = run_preload(cfg, bundle)
    torch.manual_seed(0)
    online = build_model(cfg.model, bundle.num_classes, preloaded=False).eval()
    cached = build_model(cfg.model, bundle.num_classes, preloaded=True).eval()
    cached.load_state_dict(online.state_dict())
    records = bundle.splits["val"][:4]
    ds_cached = build_dataset(cfg, bundle, "val", ("side", "keys", "values"), train=False, cache=cache,
                              records=records)
    ds_online = build_dataset(cfg, bundle, "val", ("side", "lpm"), train=False, records=records)
    b_cached = prepare_batch(next(iter(make_loader(ds_cached, 4, train=False, seed=0))), torch.device("cpu"))
    b_online = prepare_batch(next(iter(make_loader(ds_online, 4, train=False, seed=0))), torch.device("cpu"))
    keys_before = set(online.state_dict())
    with torch.no_grad():
        logits_online = online(b_online["side"], lpm=b_online["lpm"])
        logits_cached = cached(b_cached["side"], b_cached["keys"], b_cached["values"])
    torch.testing.assert_close(logits_online, logits_cached, rtol=1e-4, atol=1e-5)
    assert set(online.state_dict()) == keys_before and "_compiled_lpm" in online.__dict__


def test_cache_of_wrong_shape_or_other_variant_is_refused(ci_root: Path, tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg(ci_root, f"data.preload_dir={tmp_path / 'cache'}")
    bundle = prepare_data(cfg)
    cache = run_preload(cfg, bundle)
    key = bundle.splits["train"][0].key
    save_file({"key_states": torch.zeros(4, 3, 13, 16), "value_states": torch.zeros(4, 3, 13, 16)},
              str(cache.path(key)))
    with pytest.raises(CacheError, match=r"shape \(4, 3, 13, 16\), expected \(2, 3, 13, 16\)"):
        cache.load(key)
    fpt_cfg = make_cfg(ci_root, f"data.preload_dir={tmp_path / 'cache'}", "model.method=fpt")
    with pytest.raises(CacheError, match="not interchangeable"):
        cache_for(fpt_cfg, bundle).check_meta()
    meta = json.loads((cache.folder / "meta.json").read_text())
    assert meta["variant"] == "fpt_plus" and meta["layers"] == [2, 3]


def test_fp16_cache_option(ci_root: Path, tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg(ci_root, f"data.preload_dir={tmp_path / 'c16'}", "data.preload_dtype=fp16")
    bundle = prepare_data(cfg)
    cache = run_preload(cfg, bundle)
    raw = load_file(str(cache.path(bundle.splits["test"][0].key)))
    assert raw["value_states"].dtype == torch.float16
    keys, _ = cache.load(bundle.splits["test"][0].key)
    assert keys.dtype == torch.float32


def test_lpm_work_uses_lpm_threads_not_the_side_network_setting(tmp_path: Path, make_cfg) -> None:
    """runtime.threads=1 (the tiny side network) must not leak into preloading / feature caching: there
    runtime.lpm_threads applies, 0 meaning torch's default for the machine."""
    from common.runtime import apply_threads, setup_runtime
    from fpt_plus.pipeline import lpm_threads

    before = torch.get_num_threads()
    try:
        cfg = make_cfg(tmp_path, "runtime.threads=1", "runtime.lpm_threads=3")
        setup_runtime(cfg.runtime, cfg.seed)
        assert torch.get_num_threads() == 1
        with lpm_threads(cfg):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 1
        default = apply_threads(0)
        apply_threads(1)
        with lpm_threads(make_cfg(tmp_path, "runtime.lpm_threads=0")):
            assert torch.get_num_threads() == default
    finally:
        torch.set_num_threads(before)


def test_same_file_name_in_two_classes_gives_two_cache_entries(ci_root: Path, tmp_path: Path, make_cfg) -> None:
    """The official preload keys its files by file stem, so ``0_none/a.png`` and ``1_mild/a.png`` would overwrite
    each other; ours keys by the relative path: two files, each holding its own image's keys/values."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(ci_root / "data", root, ignore=shutil.ignore_patterns(".synthetic-stamp.json"))
    for name in ("0_none", "1_mild"):
        first = sorted((root / "train" / name).iterdir())[0]
        first.rename(first.with_name("a.png"))
    cfg = make_cfg(tmp_path, "data.synthetic=false", f"data.preload_dir={tmp_path / 'cache'}")
    bundle = prepare_data(cfg)
    cache = run_preload(cfg, bundle)
    paths = [cache.path(f"train/{name}/a.png") for name in ("0_none", "1_mild")]
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)
    (k0, v0), (k1, v1) = (cache.load(f"train/{name}/a.png") for name in ("0_none", "1_mild"))
    assert not torch.equal(k0, k1) and not torch.equal(v0, v1)
    assert len(list(cache.folder.rglob("*.safetensors"))) == sum(len(v) for v in bundle.splits.values())


def test_default_cache_folder_is_keyed_by_the_lpm_weights(ci_root: Path, tmp_path: Path, make_cfg) -> None:
    """`reproduce.py --all` trains FPT+ on the pre-trained and on a random LPM over the same data: without a
    folder per LPM weights the second row found the first one's cache and stopped on the identity check."""
    weights = tmp_path / "lpm.safetensors"
    random0 = make_cfg(ci_root, "model.pretrained=none", "model.lpm.init_seed=0")
    bundle = prepare_data(random0)
    folders = [cache_for(cfg, bundle).folder for cfg in (
        random0, make_cfg(ci_root, "model.pretrained=none", "model.lpm.init_seed=1"),
        make_cfg(ci_root, f"model.pretrained={weights}"))]
    assert len(set(folders)) == 3
    assert all(f.name.startswith("fpt_plus-") for f in folders)
    assert cache_for(make_cfg(ci_root, "model.pretrained=none", "model.lpm.init_seed=0"), bundle).folder == folders[0]
    assert cache_for(random0, bundle, "fpt").folder.name.startswith("fpt-")
