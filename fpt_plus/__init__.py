"""FPT / FPT+: fine-grained prompt tuning for high-resolution medical image classification (planned)."""
