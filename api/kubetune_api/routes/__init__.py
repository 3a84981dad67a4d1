"""HTTP routes: the original API's /api/finetune/* and the OpenAI-compatible /v1/fine_tuning/*."""
