"""Observation to state, shared by every agent: the encoder, the diffusion schedule, the DSRM
purifier, the heuristic denoisers, Stage I pre-training and the fidelity probe."""
