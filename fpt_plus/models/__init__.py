"""Networks of FPT / FPT+ and the baselines: frozen LPM with token selection, fusion module, side ViT, PETL."""
