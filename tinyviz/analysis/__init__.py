"""Probes over a forward pass, plots (data -> figure) and export."""
