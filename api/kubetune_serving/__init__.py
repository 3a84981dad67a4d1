"""Serving hand-off: vLLM answers `model: <alias>` with the alias's current fine-tuned model.

kubetune publishes an alias as a pointer file on the models volume,
`<models dir>/aliases/<alias>.json` (written atomically by `kubetune_trainer.publish`). This
package is the small sidecar that runs next to vLLM's OpenAI-compatible server and makes a
promotion reach it without a restart and without a failed request.

Design: a versioned adapter per pointer version, and a tiny proxy that owns the alias name.

- `sync` watches the pointers. For a new version it loads the adapter into vLLM under a
  name of its own, `<alias>-v<version>` (`POST /v1/load_lora_adapter`), then switches the
  alias to it, waits until no request is still running on the previous adapter and only then
  unloads it (`POST /v1/unload_lora_adapter`).
- `proxy` is what clients (and the chart's Service) talk to: it forwards everything to vLLM
  and, in a request whose `model` is an alias, puts the alias's current adapter name instead.
  Resolving the name and counting the request as in flight on that adapter happen in one
  step of the event loop, so an adapter is never unloaded under a request that chose it.

Why not make vLLM itself follow the stable name: vLLM (0.32) keys a runtime adapter by its
name. Unloading `<alias>` and loading it again from the new path leaves a window in which vLLM
answers 404 "model does not exist" for `<alias>`; re-loading the same name in place keeps the
adapter's id and swaps its weights under requests already generating (an answer made of two
versions). With a versioned name and the proxy, each request runs wholly on one version, the
old version stays loaded until its last request has ended, and a new version that fails to
load leaves the alias on the old one. The cost is one loopback hop inside the pod, and
`--max-loras 2` so both versions can share a batch during the switch.
"""
