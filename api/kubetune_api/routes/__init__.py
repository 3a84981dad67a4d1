"""HTTP routes: the seed's /api/finetune/* and the OpenAI-compatible /v1/fine_tuning/*."""
