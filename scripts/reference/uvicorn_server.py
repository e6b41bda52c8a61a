"""A streaming completions server on FastAPI + uvicorn, shaped like vLLM's OpenAI server.

vLLM answers `POST /v1/completions` with a `StreamingResponse` of server-sent events, and
uvicorn frames it: each event in a chunk of its own, then the chunked body's terminator in a
write of its own once the generator has ended. This server does the same with scripted timing
(first token after TTFT_MS, then one every ITL_MS, `max_tokens` of them, usage, `[DONE]`), and
counts the client connections it has seen by their (host, port), which `GET /stats` reports.

    python3 uvicorn_server.py PORT
"""

import asyncio
import json
import sys
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

TTFT_MS = 5.0
ITL_MS = 1.0

app = FastAPI()
peers = set()
server_ttft_ms = []


@app.get("/v1/models")
async def models(request: Request):
    peers.add((request.client.host, request.client.port))
    return {"object": "list", "data": [{"id": "uvicorn-model", "object": "model"}]}


@app.get("/stats")
async def stats():
    ttft = sum(server_ttft_ms) / len(server_ttft_ms) if server_ttft_ms else None
    return {"connections": len(peers), "requests": len(server_ttft_ms), "mean_ttft_ms": ttft}


@app.post("/v1/completions")
async def completions(request: Request):
    received = time.monotonic()
    peers.add((request.client.host, request.client.port))
    body = await request.json()
    n = max(1, int(body.get("max_tokens", 16)))

    async def events():
        for k in range(n):
            due = received + (TTFT_MS + k * ITL_MS) / 1000.0
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if k == 0:
                server_ttft_ms.append((time.monotonic() - received) * 1000.0)
            finish = "length" if k + 1 == n else None
            chunk = {"id": "cmpl-uv", "object": "text_completion", "model": "uvicorn-model",
                     "choices": [{"index": 0, "text": "tok ", "finish_reason": finish}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        usage = {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}
        yield f"data: {json.dumps({'id': 'cmpl-uv', 'object': 'text_completion', 'model': 'uvicorn-model', 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
