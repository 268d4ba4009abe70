"""Shared plumbing of the reproduction monorepo: config, seeding, runtime/DDP, checkpoints, run directories,
tracking, metric wrappers, offline pretrained weights, readers and synthetic-image primitives.

Models, losses, datasets and training loops live in the projects; nothing here imports a project.
"""

__version__ = "0.1.0"
