"""Reporting: several runs side by side. compare.py runs `loralab compare` (one run per method) and `loralab
sweep` (a grid of settings over seeds) on the training loop; report.py writes their comparison as report.md
and plots. May import training and everything below it; only cli imports reporting.
"""
