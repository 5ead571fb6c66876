"""`invoke build`: the ordered stage list (pipeline.py) and one module per build stage."""
