"""The visualisation engine: batched, spatiotemporally regularised activation maximisation for video models.

A plain library (tensors in, tensors out): no Flask, no database. See DESIGN 4.
"""
