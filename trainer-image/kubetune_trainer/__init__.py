"""The trainer that runs inside a FineTuneJob's Job: data loading, fine-tuning, checkpoints and model output."""
