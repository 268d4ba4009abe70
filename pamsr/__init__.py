"""PAMSR: super-resolution of rotationally scanned photoacoustic microscopy (planned)."""
