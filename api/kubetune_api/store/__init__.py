"""The API's view of the cluster, one module per kind of object it holds.

`cluster.ClusterStore` composes them: `finetunejobs` (cached or direct reads, writes),
`claims` (the idempotency ConfigMaps), `trainer_pods` (pods, their events and logs) and
`api_key_secrets` (the API keys Secret). `job_cache` and `informer` keep the FineTuneJob
cache current; `errors` turns apiserver failures into the three exceptions the app answers.
"""
