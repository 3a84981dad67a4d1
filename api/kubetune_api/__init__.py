"""The kubetune HTTP API: the seed's fine-tuning endpoints on top of FineTuneJob resources."""
