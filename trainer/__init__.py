"""textgen trainer: the character-level LSTM, its training loop, bundle export, the RQ job and worker.

Stands on the shared core ``textgen`` (charset, options, corpus catalog, bundle layout, job records).
"""
from textgen.tfimport import import_tensorflow

import_tensorflow()
