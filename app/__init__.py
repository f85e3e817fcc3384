"""FastAPI service (issue 4): routes, schemas, settings, job submission and the demo page.

Imports `worker` only through the job backend.
"""
