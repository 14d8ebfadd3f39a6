"""GPTCache 0.1.44's own server (gptcache_server: its OpenAI chat proxy) for `make bench-peers`.

Run with .venv-peers/gptcache/bin/python. The server's default cache embeds with an ONNX model
it downloads from a hub; this sets the same kind of cache (SQLite + FAISS, distance evaluation,
`init_similar_cache`) over Vane's own MiniLM ONNX model and tokenizer from models/build, so both
sides embed with the same network. The proxy calls the upstream with the pre-1.0 openai client
(GPTCache's adapter needs `openai.ChatCompletion`), pointed at the mock upstream.
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np
import onnxruntime
import openai
import uvicorn
from gptcache import Cache
from gptcache.adapter.api import init_similar_cache
from gptcache.embedding.base import BaseEmbedding
from gptcache.processor.pre import last_content
from starlette.middleware.cors import CORSMiddleware
from tokenizers import Tokenizer

import gptcache_server.server as server


class MiniLM(BaseEmbedding):
    """all-MiniLM-L6-v2 as exported by models/export.py (output `sentence_embedding`)."""

    def __init__(self, model: str, tokenizer: str, max_tokens: int = 256):
        self.session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(tokenizer)
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()

    def to_embeddings(self, data, **_):
        enc = self.tokenizer.encode(str(data))
        feeds = {name: np.array([values], dtype=np.int64) for name, values in
                 (("input_ids", enc.ids), ("attention_mask", enc.attention_mask), ("token_type_ids", enc.type_ids))}
        return self.session.run(["sentence_embedding"], feeds)[0][0].astype("float32")

    @property
    def dimension(self) -> int:
        return 384


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="the mock's base URL, e.g. http://127.0.0.1:8812/v1")
    ap.add_argument("--model", required=True, help="models/build/minilm-int8.onnx")
    ap.add_argument("--tokenizer", required=True, help="models/build/tokenizer.json")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    openai.api_base = args.upstream
    # What `gptcache_server --openai True` does, with our embedding in place of its default.
    server.openai_cache = Cache()
    init_similar_cache(data_dir=args.data_dir or tempfile.mkdtemp(prefix="gptcache-"), pre_func=last_content,
                       cache_obj=server.openai_cache, embedding=MiniLM(args.model, args.tokenizer))
    server.app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_credentials=True, allow_methods=["*"],
                              allow_headers=["*"])
    uvicorn.run(server.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
