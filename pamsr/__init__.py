"""PAMSR: super-resolution of rotationally scanned photoacoustic microscopy images incorporating the scanning prior
(Pan, Li et al., arXiv 2312.07226): odd/even-row registration, displacement degradation, gradient-based patch
selection and SwinIR with 1->3 / 3->1 adapters. See README.md for the component -> file map."""
