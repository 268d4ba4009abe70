"""JOINEDTrans: joint optic disc/cup segmentation and fovea detection, coarse-to-fine, vessel-pretrained encoder."""
