"""Job functions, the checkpoint cache and the RQ worker entry point (issue 4).

Imports `model`, never `app`.
"""
