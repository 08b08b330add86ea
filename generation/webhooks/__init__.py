"""Signed webhooks for task outcomes (Standard Webhooks).

- `services`: the delivery row for a task that ended (its payload is the API's task).
- `delivery`: sending it, one claimed attempt at a time, retried with backoff.
- `targets`: the SSRF checks on callback URLs; `signing`: the signature.
- `selectors`: the owner's deliveries.
"""
