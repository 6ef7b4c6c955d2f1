"""Benchmark data with ground-truth boxes for scoring saliency maps: synthetic composites and user folders."""
