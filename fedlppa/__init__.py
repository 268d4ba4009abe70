"""FedLPPA: personalized federated segmentation with learnable prompts and aggregation (planned)."""
