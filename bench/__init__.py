"""Benchmarks that print ratios against the tutorials' way of serving CLIP, all measured in one run."""
