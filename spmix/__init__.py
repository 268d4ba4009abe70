"""SPMix: saliency-guided patch mixup for long-tailed skin lesion classification (planned)."""
