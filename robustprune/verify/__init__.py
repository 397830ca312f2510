"""Certified and exact robustness for the models that allow it: the network as affine maps and ReLUs (network.py),
IBP and CROWN lower bounds on the margins (bounds.py), and the big-M MILP that decides what the bounds leave open
(milp.py)."""
