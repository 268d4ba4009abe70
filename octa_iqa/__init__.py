"""UNO-QA: unsupervised anomaly-aware OCTA image quality assessment (planned)."""
