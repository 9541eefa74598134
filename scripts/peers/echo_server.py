"""Python websockets echo server for interop tests.

usage: echo_server.py PORT [--no-context-takeover] [--no-compression] [--max-window-bits N]
Prints "ready PORT" on stdout once listening on 127.0.0.1.
"""
import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    port = int(sys.argv[1])
    args = sys.argv[2:]
    no_ctx = "--no-context-takeover" in args
    bits = None
    if "--max-window-bits" in args:
        bits = int(args[args.index("--max-window-bits") + 1])
    if "--no-compression" in args:
        extensions = []
    else:
        extensions = [
            ServerPerMessageDeflateFactory(
                server_no_context_takeover=no_ctx,
                client_no_context_takeover=no_ctx,
                server_max_window_bits=bits,
                compress_settings={"memLevel": 5},
            )
        ]
    async with serve(echo, "127.0.0.1", port, compression=None, extensions=extensions, max_size=2**26) as server:
        print("ready", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
