"""An OpenAI-compatible Images API under /openai/v1/, for the clients that speak it
(Open WebUI's "OpenAI" image engine, LibreChat, SillyTavern, the `openai` package).

A door like `generation.api`: each request becomes an ordinary Easel task through
`generation.services.generation_create` (quotas, the fair queue, history, webhooks),
authenticated with Easel's own API tokens and answered in OpenAI's shapes, errors
included. docs/openai.md has the mapping; its modules:

- `errors`: OpenAI's error body and the exception handler of these views;
- `mapping`: an OpenAI request (model, size, n, picture, mask) → Easel's create request;
- `create`: the one function that turns a parsed request into a task;
- `answers`: the finished task as OpenAI's images response (signed links or base64);
- `links`: the signed, expiring image links and the view that serves them;
- `views`, `urls`: the endpoints.
"""
