"""TensorFlow, imported with its C++ start-up lines kept off stderr (the server's and trainer's first step)."""
import os


def import_tensorflow():
    """Import TensorFlow with its C++ start-up lines (absl, oneDNN notices) kept off stderr.

    They are printed before TF_CPP_MIN_LOG_LEVEL takes effect and would bury the one-line errors
    users need. Only file descriptor 2 is silenced, and only during the import; a failing import
    still raises its Python exception. Returns the module.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ errors surface as Python exceptions
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow
