"""The kubetune HTTP API: the original fine-tuning endpoints on top of FineTuneJob resources."""
