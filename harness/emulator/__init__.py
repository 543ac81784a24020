"""TGI-compatible replica emulator: N replicas of a modeled small LLM sharing one simulated GPU.

``slm-harness emulate`` (``cli.py``) -> ``server.Emulator`` (one event loop, one timer, one GPU) ->
per replica ``app.ReplicaApp`` (routes) over ``http.Connection`` (raw HTTP/1.1), requests scheduled
by ``engine`` (continuous batching or fixed timing), tokens written by ``sinks`` in ``wire`` format,
with ``groundtruth`` and ``metrics`` recording what was sent. See docs/emulator.md.
"""
