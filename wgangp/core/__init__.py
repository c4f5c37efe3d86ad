"""The method: the WGAN-GP objective and Algorithm 1. Imports torch only."""
