"""The FineTuneJob contract: typed models from which the CRD is generated (the one source of truth)."""
