"""Sanity checks that reuse the training loop's parts: overfit-tiny (and lr-find)."""
