"""JOINEDTrans: joint optic disc/cup segmentation and fovea detection (planned)."""
