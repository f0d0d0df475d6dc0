"""The OpenAI APIs modelmux serves, one module each: how a request becomes a Vertex call (`prepare`) and what the
client gets back (`Call`). The Translate addon runs them all the same way: one relay, one retry loop, one record,
one dump. Adding an API is a translator module (translate/) plus a module here.
"""

from . import chat, embeddings, responses, responses_compact, responses_tokens

# the POST paths translated to Vertex calls
BY_PATH = {api.PATH: api for api in (chat, embeddings, responses, responses_compact, responses_tokens)}
