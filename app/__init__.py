"""FastAPI service (issue 4): routes, schemas, settings, job submission, the demo page. Imports `worker` only through the job backend."""
