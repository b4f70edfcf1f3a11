"""The transformer, its hook points and sampling."""
