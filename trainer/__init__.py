"""textgen trainer: corpora, the character-level LSTM, its training loop, and the model bundle."""
