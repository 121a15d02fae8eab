"""TensorFlow and Keras for the trainer's modules: ``from trainer.tf import keras, tf``.

Imported once, TensorFlow first and quietly (``textgen.tfimport``: its C++ start-up lines kept off
stderr). The ``trainer`` package itself imports neither, so a command refused for bad input (a flag, a
corpus, a broken model.json) says so without the seconds of importing them.
"""
from textgen.tfimport import import_tensorflow

tf = import_tensorflow()

import keras  # noqa: E402  (after TensorFlow, whose start-up lines are kept off stderr above)

__all__ = ["keras", "tf"]
