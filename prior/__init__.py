"""PRIOR: prototype representation joint learning from medical images and reports (planned)."""
