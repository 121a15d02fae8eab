"""The HTTP side of textgen: the page, a JSON API (/api/v1) and OpenAI-compatible completions (/v1),
a gRPC client of the server through ``client.Client``. Started with ``python -m web``."""
