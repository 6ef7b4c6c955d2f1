"""Saliency-map metrics as numpy functions over maps, probabilities and boxes; no runtime here."""
