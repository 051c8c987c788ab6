"""The /v1 request pipeline, one module per step, in the order a request meets them:

    families.py      what a route family is (chat, completions, embeddings, …): data, not code paths
    intake.py        1. parse and validate the body for its family (proxy/bodies.py read it within bounds)
    admission.py     2. the key, its scope, the model, the plan's allow-list, the limiter's admit
    ../upstream/     3. forward.py picks upstreams and fails over; http1.py is the transport
    relay.py         4. the answer to the client, whole or streamed (sse.py frames OpenAI's streams)
    accounting.py    5. tokens (usage_bytes.py reads them), cost, limiter settle, usage row, metrics

    pipeline.py      runs the steps for any family and registers the families' routes
    call.py          what one request carries from step 1 to step 5
    request_ids.py, scrub.py: request ids; secrets kept out of relayed errors
    anthropic.py     Anthropic's Messages family: x-api-key, its error shape, its typed events and usage
    passthrough.py   moderations, images, audio (binary speech, uploads), rerank
    multipart.py     uploads streamed to the upstream after reading only the form's first fields
    rewrite.py       what the tenant sees: the public model name, no upstream extras
    cors.py          server.cors: preflights and the allowed origin on every answer

Before step 1, proxy/bodies.py reads the body within the live limits, and the
app's middleware (proxy/app.py) writes the access line (proxy/access_log.py).
"""
