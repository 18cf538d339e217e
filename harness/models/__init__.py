"""Performance models: the paper's roofline (paper), the model fitted to sweeps (fitted), and
their analysis of a run."""
