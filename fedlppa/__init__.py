"""FedLPPA (Lin et al., IEEE TMI; arXiv 2402.17502): personalized federated weakly-supervised segmentation with
learnable prompts (universal, data-distribution, annotation-sparsity), dual-attention fusion, a prompt-similarity
dual decoder and learnable parameter-wise aggregation; one algorithm core run sequentially or on Flower."""
