"""Figures and the written report of a run, and comparisons of runs."""
