"""Benchmarks (not tests): comparable figures for the delivery pipeline and the API."""
