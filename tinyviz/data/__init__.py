"""Tokenizers, built-in corpora, text loading and batches."""
