"""Evaluate a trained segmenter per 3D volume, or predict tumour masks for unlabelled CT volumes.

``python eval.py [--checkpoint auto|PATH] [--out DIR] [key=value ...]``: the test split of the checkpoint's own
config (rebuilt from the checkpoint); per-volume Dice, Jaccard, HD95 and ASD (mm) on the original grid ->
``eval/summary.csv`` + ``eval/per_case.csv``. Under torchrun the test volumes are strided over the ranks and
gathered (each volume once); rank 0 writes.

``python eval.py --checkpoint PATH --predict DIR``: every ``*.nii``/``*.nii.gz`` under DIR (no labels: the whole
slice is the ROI) -> ``<out>/<name>_tumour.nii.gz`` (uint8, RAS affine) and ``predictions.csv`` (under torchrun each
rank writes the masks of its share of the volumes, rank 0 the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aslseg.data import Case, extract_slices, load_volume, paste_back
from aslseg.engine import evaluate_test, predict_probs
from aslseg.pipeline import prepare_data
from aslseg.semisup import build_segmenter
from aslseg.settings import Config
from aslseg.sharding import rank_items
from common.checkpoint import load_checkpoint
from common.runtime import dist_info, gather_by_index, is_main_process, setup_runtime
from common.tracking import write_eval_tables

__all__ = ["evaluate_checkpoint", "predict_folder", "main"]

PROJECT_DIR = Path(__file__).resolve().parent


def _model(cfg: Config, checkpoint: Path, device):
    model = build_segmenter(cfg.model).to(device)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return model.eval()


def evaluate_checkpoint(cfg: Config, checkpoint: Path, out: Path) -> dict[str, float]:
    device = setup_runtime(cfg.runtime, cfg.seed)
    prep = prepare_data(cfg)
    model = _model(cfg, checkpoint, device)
    rows, summary = evaluate_test(prep.test, lambda c: predict_probs(model, c.slices.images, device),
                                  surface=cfg.eval.surface)
    write_eval_tables(out, summary, rows)
    if is_main_process():
        print(f"[aslseg] eval {checkpoint}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()) + f" -> {out}")
    return summary


def predict_folder(cfg: Config, checkpoint: Path, folder: Path, out: Path) -> list[Path]:
    import nibabel as nib
    import pandas as pd

    device = setup_runtime(cfg.runtime, cfg.seed)
    model = _model(cfg, checkpoint, device)
    files = sorted(p for p in Path(folder).rglob("*") if p.name.endswith((".nii", ".nii.gz"))
                   and not p.name.startswith("._"))
    if not files:
        raise FileNotFoundError(f"--predict {folder}: no .nii / .nii.gz volumes found")
    out.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    mine = rank_items(len(files))
    for path in (files[i] for i in mine):
        vol = load_volume(Case(path.name.split(".")[0], path, None))
        s = extract_slices(vol, cfg.data.size, cfg.data.hu_window, "none", 0, 0)
        mask = paste_back(predict_probs(model, s.images, device), s.meta[vol.case_id])
        target = out / f"{path.name.split('.')[0]}_tumour.nii.gz"
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), vol.affine), str(target))
        written.append(target)
        rows.append({"volume": str(path), "mask": str(target), "tumour_voxels": int(mask.sum()),
                     "tumour_ml": float(mask.sum() * np.prod(vol.spacing) / 1000.0)})
    if dist_info().distributed:
        _, gathered = gather_by_index(mine, np.array(rows + [None], dtype=object)[:-1])
        rows = list(gathered)
    if is_main_process():
        pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
    return written


def main(argv: Sequence[str] | None = None):
    from common.cli import eval_parser, parse_eval

    parser = eval_parser("Evaluate an ASLseg segmenter per volume, or predict masks for CT volumes")
    ev = parse_eval(Config, argv, parser, "aslseg", PROJECT_DIR)
    run_dir = ev.checkpoint.parent.parent
    if ev.args.predict:
        out = Path(ev.args.out) if ev.args.out else run_dir / "predict"
        return predict_folder(ev.config, ev.checkpoint, Path(ev.args.predict), out)
    out = Path(ev.args.out) if ev.args.out else run_dir / "eval"
    return evaluate_checkpoint(ev.config, ev.checkpoint, out)


if __name__ == "__main__":
    main()
