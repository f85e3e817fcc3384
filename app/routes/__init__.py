"""One router per resource; `docs` holds the OpenAPI fragments they share."""
