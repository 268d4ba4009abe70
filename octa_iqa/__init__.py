"""UNO-QA: unsupervised anomaly-aware OCTA image quality assessment with test-time clustering (arXiv 2212.10541)."""
