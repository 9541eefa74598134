"""The web example's back end: serves a folder over HTTP on PORT and a
ticker feed over WebSocket on PORT+1, both on 127.0.0.1.

usage: ticker_server.py DIR PORT
Every 100 ms each connection gets one JSON tick
{"symbol": ..., "price": ..., "seq": n} for one of three symbols.
Prints "ready http://127.0.0.1:PORT/" once both listen.
"""
import asyncio
import functools
import http.server
import json
import random
import sys
import threading

from websockets.asyncio.server import serve

SYMBOLS = {"ACME": 101.0, "GLOBEX": 42.0, "INITECH": 7.5}


async def feed(ws):
    prices = dict(SYMBOLS)
    seq = 0
    while True:
        symbol = random.choice(list(prices))
        prices[symbol] = max(0.01, prices[symbol] * (1 + random.uniform(-0.01, 0.01)))
        seq += 1
        await ws.send(json.dumps({"symbol": symbol, "price": round(prices[symbol], 2), "seq": seq}))
        await asyncio.sleep(0.1)


class Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


async def main():
    folder, port = sys.argv[1], int(sys.argv[2])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=folder))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    async with serve(feed, "127.0.0.1", port + 1):
        print(f"ready http://127.0.0.1:{port}/", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
