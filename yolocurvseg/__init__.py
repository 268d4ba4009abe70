"""YoloCurvSeg: curvilinear segmentation from one noisy skeleton (planned)."""
