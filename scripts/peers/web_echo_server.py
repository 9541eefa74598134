"""Python websockets echo server for the browser tests of the wasm client.

usage: web_echo_server.py PORT
Echoes every message on PORT. On PORT+2 a TCP listener accepts and never
answers (for connect timeouts). Text commands:
  close:CODE:REASON  the server closes this connection with CODE and REASON
  restart:MILLIS     closes every connection (1012), stops listening for
                     MILLIS, then listens again on the same port
  last-close         answers "CODE REASON" of the last close a client sent
Prints "ready PORT" once listening on 127.0.0.1.
"""
import asyncio
import sys

from websockets.asyncio.server import serve

state = {"last_close": "none", "server": None, "restarting": False}


async def handler(ws):
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("close:"):
                _, code, reason = message.split(":", 2)
                await ws.close(int(code), reason)
                return
            if isinstance(message, str) and message.startswith("restart:"):
                asyncio.get_running_loop().create_task(restart(int(message.split(":")[1])))
                continue
            if message == "last-close":
                await ws.send(state["last_close"])
                continue
            await ws.send(message)
    finally:
        received = ws.protocol.close_rcvd
        if received is not None and ws.protocol.close_rcvd_then_sent:
            state["last_close"] = f"{received.code} {received.reason}"


async def restart(millis):
    server = state["server"]
    server.close(close_connections=False)
    for conn in list(server.connections):
        await conn.close(1012, "restarting")
    await server.wait_closed()
    await asyncio.sleep(millis / 1000)
    state["server"] = await listen(state["port"])
    print("restarted", flush=True)


async def listen(port):
    return await serve(handler, "127.0.0.1", port, max_size=2**26)


async def silent(reader, writer):
    await reader.read()  # holds the connection, never answers
    writer.close()


async def main():
    state["port"] = int(sys.argv[1])
    state["silent"] = await asyncio.start_server(silent, "127.0.0.1", state["port"] + 2)
    state["server"] = await listen(state["port"])
    print("ready", state["port"], flush=True)
    await asyncio.get_running_loop().create_future()


asyncio.run(main())
