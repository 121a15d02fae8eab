"""textgen server: serves the bundles under ``$TEXTGEN_DATA_DIR/models`` over gRPC (``python -m server``).

- ``store``: the model store (loads bundles, follows new and deleted versions on disk);
- ``engine``: the decode engine (continuous batching over a bundle's ``start``/``advance``; no gRPC);
- ``reference``: the original's one-window-per-character loop, for tests and benchmarks;
- ``service``: the TextGen servicer; ``training_service``: the Training servicer;
- ``app``: wiring (health, reflection, auth, TLS, graceful shutdown); ``config``: settings from the environment.
"""

import sys

from textgen.tfimport import import_tensorflow

# `python -m server keys ...` (server/keys_cli.py) needs no TensorFlow: while `-m` imports this package,
# sys.argv is ["-m", "keys", ...]. Everything else gets TensorFlow now, its C++ start-up lines kept quiet.
if sys.argv[:2] != ["-m", "keys"]:
    import_tensorflow()
