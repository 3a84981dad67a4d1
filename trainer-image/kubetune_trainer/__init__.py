"""The trainer that runs inside a FineTuneJob's Job.

Data loading, fine-tuning, checkpoints and model output.
"""

__version__ = "0.1.0"
