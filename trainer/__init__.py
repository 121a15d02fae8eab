"""textgen trainer: corpora, the character-level LSTM, its training loop, and the model bundle."""
import os

# TensorFlow's C++ start-up chatter buries the messages users need; opt back in with 0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
