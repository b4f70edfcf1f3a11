"""The trainer, the training session, the run folder store, zip import and health checks."""
