"""Rankforge trainer: reads a job spec and a dataset snapshot, writes a checkpoint directory and metrics.

Entry point: `python -m trainer.run SPEC.json`. Never imports app/; importing this package (or trainer.params)
does not import torch.
"""

__version__ = "0.1.0"
