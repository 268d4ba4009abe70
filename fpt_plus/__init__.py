"""FPT / FPT+: fine-grained prompt tuning for high-resolution medical image classification (FPT, MICCAI 2024; FPT+,
IEEE TNNLS 2025). Entry points: train, eval, reproduce, bench, synth, preload, convert."""
