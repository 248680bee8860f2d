"""Layer training: the LightningModule and what a training run keeps (EMAs, checkpoints, resume, memory plan)."""
