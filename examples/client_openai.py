"""Any OpenAI client works unchanged: point it at the gateway with a bm-… key.

    BLUESMINDS_KEY=bm-... python examples/client_openai.py
"""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("BLUESMINDS_URL", "http://127.0.0.1:8080/v1"),
                api_key=os.environ["BLUESMINDS_KEY"])

reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
print(reply.choices[0].message.content, reply.usage)

# Streams carry usage in their last chunk when asked, exactly as OpenAI's do.
stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Count to 3"}],
                                        stream=True, stream_options={"include_usage": True})
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
    elif chunk.usage:
        print("\nusage:", chunk.usage)

print(len(client.embeddings.create(model="text-embedding-3-small", input="hello").data[0].embedding), "dimensions")
print([m.id for m in client.models.list().data])
