"""Ablation presets and the runner that trains their arms."""
