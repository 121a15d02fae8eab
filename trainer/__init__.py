"""textgen trainer: the character-level LSTM, its training loop, bundle export, the RQ job and worker.

Stands on the shared core ``textgen`` (charset, options, corpus catalog, bundle layout, job records).

TensorFlow is imported by the modules that use it (``textgen.tfimport``, its C++ start-up lines kept
off stderr), not by the package: a command refused for bad input (a flag, a corpus, a broken
model.json) says so without the seconds of importing it. The worker imports it before its first job.
"""
