"""ASLseg: semi-supervised liver-tumour segmentation with SAM in the loop (Chen et al., arXiv:2312.07969)."""
