"""The kopf operator: FineTuneJob resources become batch/v1 Jobs; their status is kept true."""
