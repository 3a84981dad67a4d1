"""The kopf operator that turns FineTuneJob resources into batch/v1 Jobs and keeps their status true."""
