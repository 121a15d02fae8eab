"""textgen server: serves the bundles under ``$TEXTGEN_DATA_DIR/models`` over gRPC (``python -m server``).

- ``store``: the model store (loads bundles, follows new and deleted versions on disk);
- ``engine``: the decode engine (continuous batching over a bundle's ``start``/``advance``; no gRPC);
- ``reference``: the original's one-window-per-character loop, for tests and benchmarks;
- ``service``: the TextGen servicer; ``training_service``: the Training servicer;
- ``app``: wiring (health, reflection, auth, TLS, graceful shutdown); ``config``: settings from the environment.
"""

from textgen.tfimport import import_tensorflow

import_tensorflow()
