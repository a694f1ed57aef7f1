"""Roofline cost model for decode attention and the recall theory of bucketed top-k."""
