"""ASLseg: semi-supervised liver tumour segmentation with SAM in the loop (planned)."""
