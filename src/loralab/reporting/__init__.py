"""Reporting: several runs side by side. compare.py runs `loralab compare` (one run per method) and `loralab
sweep` (a grid of settings), each over one or more seeds, on the training loop; groups.py puts the runs of a
setting together and tests settings against each other; report.py writes report.md and report.html (html.py,
from content.py's ReportContent) with plots.py's figures. May import training and everything below it; only
cli imports reporting.
"""
