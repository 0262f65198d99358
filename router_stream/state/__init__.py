"""Local state: the sticky decision table and the request-id dedup window, per partition."""
