#!/usr/bin/env python3
"""Fault tests of a Tether cluster: several `tether serve` nodes sharing one
PostgreSQL store, against a loopback WebSocket server that logs every open,
close and message with the client's key and the time.

    scripts/cluster-faults.py --tether target/debug/tether --pg postgres://…/tether --pg-ctl scripts/postgres.sh [--quick]

Each node runs 1/N of the auto-connect clients. Every client sends "tick"
every 250 ms while open. The faults, each asserted on the server's log
(counts, timing, never two live connections for one key):

  1 steady state           one connection per key; each node holds its share ±15 %
  2 kill -9 of a node      its keys reconnect elsewhere, p50 <= 6 s, max <= 8 s
  3 SIGSTOP 2 s            no reconnects
  4 SIGSTOP 15 s           others take over within 8 s; after SIGCONT the
                           stale node sends 0 messages and closes within 1 s
  5 PostgreSQL restart     no reconnects
  6 PostgreSQL down 20 s   clients stop within 5 s, all back within 10 s
  7 rolling SIGTERM        handover p99 <= 1.5 s, never two live connections
  8 durable sends through node A to keys owned by node B while B is killed:
                           all delivered, in order per key

Prints a table of the figures measured; exits non-zero on any failed check.
Needs Python `websockets` (scripts/install-peers.sh puts it in
target/peers/venv) and PostgreSQL's pg_ctl (scripts/postgres.sh).
"""

import argparse
import http.server
import threading
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websockets

TOKEN = "cluster-test-token"
MODULE = """
local tick
function on_open(conn)
  tick = timer.every(250, function() conn:send("tick") end)
end
function on_close(conn, code, reason)
  if tick then timer.cancel(tick); tick = nil end
end
"""


class Log:
    """What the server saw, per connection and per key."""

    def __init__(self):
        self.next_id = 0
        self.live = {}  # key -> set of connection ids
        self.max_live = {}  # key -> most live connections at once
        self.events = []  # (t, key, conn, kind, data)
        self.conn_key = {}
        self.last_change = 0.0  # when a connection last opened or closed

    def open(self, key):
        self.next_id += 1
        cid = self.next_id
        self.conn_key[cid] = key
        self.live.setdefault(key, set()).add(cid)
        self.max_live[key] = max(self.max_live.get(key, 0), len(self.live[key]))
        self.events.append((time.monotonic(), key, cid, "open", None))
        self.last_change = time.monotonic()
        return cid

    def close(self, key, cid):
        self.live.get(key, set()).discard(cid)
        self.events.append((time.monotonic(), key, cid, "close", None))
        self.last_change = time.monotonic()

    def message(self, key, cid, data):
        self.events.append((time.monotonic(), key, cid, "msg", data))

    def live_keys(self):
        return {k for k, c in self.live.items() if c}

    def since(self, t, kind=None):
        return [e for e in self.events if e[0] >= t and (kind is None or e[3] == kind)]

    def reset_max(self):
        self.max_live = {k: len(c) for k, c in self.live.items()}


class Cluster:
    def __init__(self, args, ws_port):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="tether-cluster-")
        self.procs = {}
        self.ports = {}
        db = f"cluster_{os.getpid()}"
        base, _ = args.pg.rsplit("/", 1)
        subprocess.run(["psql", args.pg, "-qc", f"DROP DATABASE IF EXISTS {db}"], check=True)
        subprocess.run(["psql", args.pg, "-qc", f"CREATE DATABASE {db}"], check=True)
        self.store = f"{base}/{db}"
        os.makedirs(f"{self.dir}/modules")
        with open(f"{self.dir}/modules/tick.lua", "w") as f:
            f.write(MODULE)
        self.ws_port = ws_port
        self.hook_port = None

    def config(self, n):
        port = self.ports[n]
        hook = f"""
[[webhook]]
name = "messages"
url = "http://127.0.0.1:{self.hook_port}/hook"
secret_env = "TETHER_TEST_WEBHOOK_SECRET"
events = ["message"]
""" if self.hook_port else ""
        path = f"{self.dir}/node{n}.toml"
        with open(path, "w") as f:
            f.write(f"""[host]
listen = "127.0.0.1:{port}"
store = "{self.store}"
secrets = "plaintext"
shutdown_grace_secs = 5

[[client_type]]
name = "feed"
module = "modules/tick.lua"
[client_type.defaults]
url = "ws://127.0.0.1:{self.ws_port}/k/none"
auto_connect = true
[client_type.defaults.reconnect]
initial_delay_ms = 100
max_delay_ms = 1000
{hook}""")
        return path

    def start(self, n):
        if n not in self.ports:
            self.ports[n] = free_port()
        env = dict(os.environ, TETHER_ADMIN_TOKEN=TOKEN, TETHER_CLUSTER_SECRET="cluster-test-secret",
                   TETHER_TEST_WEBHOOK_SECRET="hook-secret",
                   RUST_LOG="warn,tether_host::cluster=info")
        log = open(f"{self.dir}/node{n}.log", "a")
        self.procs[n] = subprocess.Popen(
            [self.args.tether, "serve", "--config", self.config(n)],
            stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.api(n, "GET", "/healthz")
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError(f"node {n} did not start; see {self.dir}/node{n}.log")

    def api(self, n, method, path, body=None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[n]}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return json.loads(text) if text and r.headers.get("Content-Type", "").startswith("application/json") else text

    def owners(self, n):
        """key -> node number, from node n's view of the cluster."""
        view = self.api(n, "GET", "/api/cluster")
        by_addr = {f"http://127.0.0.1:{p}": m for m, p in self.ports.items()}
        out = {}
        for node in view["nodes"]:
            for k in node["clients"]:
                out[k] = by_addr.get(node["addr"])
        return out

    def signal(self, n, sig):
        self.procs[n].send_signal(sig)

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
        for p in self.procs.values():
            p.wait()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Checks:
    def __init__(self):
        self.rows = []
        self.failed = 0

    def check(self, name, ok, measured, target):
        self.rows.append((name, measured, target, "ok" if ok else "FAILED"))
        if not ok:
            self.failed += 1
        print(f"  {'ok    ' if ok else 'FAILED'} {name}: {measured} (target {target})", flush=True)


async def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tether", default="target/debug/tether")
    ap.add_argument("--pg", required=True, help="a PostgreSQL URL the script may create databases on")
    ap.add_argument("--pg-ctl", help="scripts/postgres.sh, to stop and restart PostgreSQL (faults 5 and 6)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="each fault once")
    ap.add_argument("--only", help="comma-separated fault numbers")
    args = ap.parse_args()
    only = set(int(x) for x in args.only.split(",")) if args.only else set(range(1, 9))
    reps = 1 if args.quick else 3

    log = Log()

    sockets = {}  # connection id -> the server's socket

    async def handler(ws):
        key = ws.request.path.rsplit("/", 1)[-1]
        cid = log.open(key)
        sockets[cid] = ws
        try:
            async for m in ws:
                log.message(key, cid, m)
        except websockets.ConnectionClosed:
            pass
        finally:
            sockets.pop(cid, None)
            log.close(key, cid)

    server = await websockets.serve(handler, "127.0.0.1", 0, ping_interval=None, max_size=None)
    ws_port = server.sockets[0].getsockname()[1]
    cl = Cluster(args, ws_port)
    # A webhook receiver: every event it is given, by the event's number.
    hooked = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hooked.extend((e["seq"], e.get("data")) for e in body["events"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    hook_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook_server.serve_forever, daemon=True).start()
    cl.hook_port = hook_server.server_address[1]
    checks = Checks()
    keys = [f"k{i:04d}" for i in range(args.clients)]
    everyone = set(keys)
    try:
        for n in range(args.nodes):
            cl.start(n)
        for k in keys:
            cl.api(0, "POST", "/api/clients", {"key": k, "type": "feed", "url": f"ws://127.0.0.1:{ws_port}/k/{k}"})
        ok = await wait_for(lambda: log.live_keys() == everyone, 60)
        assert ok, f"only {len(log.live_keys())} of {len(keys)} clients connected; see {cl.dir}"

        async def settled(timeout=60):
            """All keys live once, the loads even (the assignment converged)
            and no connection opened or closed for 2 s: no handover under way."""
            def good():
                if log.live_keys() != everyone or any(len(c) > 1 for c in log.live.values()):
                    return False
                if time.monotonic() - log.last_change < 2:
                    return False
                try:
                    owners = cl.owners(0)
                except Exception:
                    return False
                counts = [list(owners.values()).count(n) for n in cl.procs if cl.procs[n].poll() is None]
                # Converged: nobody above the share rounded up (webhooks count
                # too), so at most one short per other node.
                return len(owners) == len(keys) and max(counts) - min(counts) <= len(counts)
            return await wait_for(good, timeout, 0.25)

        if 1 in only:
            print("1 steady state", flush=True)
            ok = await settled(60)
            owners = cl.owners(0)
            counts = [list(owners.values()).count(n) for n in range(args.nodes)]
            share = len(keys) / args.nodes
            checks.check("1 steady: connections per key", ok and all(len(log.live.get(k, ())) == 1 for k in keys),
                         f"{sum(len(log.live.get(k, ())) for k in keys)} for {len(keys)} keys", "exactly 1 each")
            checks.check("1 steady: clients per node", all(abs(c - share) <= 0.15 * share for c in counts),
                         "/".join(map(str, counts)), f"{share:.0f} ± 15 %")
            # Plain sends through node 0 to clients node 1 owns: forwarded.
            theirs = [k for k, n in owners.items() if n == 1][:20]
            t0 = time.monotonic()
            answers = [cl.api(0, "POST", f"/api/clients/{k}/send", {"text": f"via-0-{k}"}) for k in theirs]
            await wait_for(lambda: all(any(e[1] == k and e[4] == f"via-0-{k}" for e in log.since(t0, "msg")) for k in theirs), 5)
            got = sum(1 for k in theirs if any(e[1] == k and e[4] == f"via-0-{k}" for e in log.since(t0, "msg")))
            checks.check("1 steady: plain sends through a node that does not own the client",
                         got == len(theirs) and all(a.get("queued") for a in answers), f"{got} of {len(theirs)} delivered", "all")
            # Events of every node reach an event stream on any node, in the
            # log's order.
            others = [k for k, n in owners.items() if n in (1, 2)][:20]
            stream = await asyncio.to_thread(lambda: urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{cl.ports[0]}/api/events", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=10))
            seen = []

            def read_stream():
                ident, data = None, None
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline and len(seen) < len(others):
                    line = stream.readline().decode().rstrip("\n")
                    if line.startswith("id:"):
                        ident = int(line[3:].strip())
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                    elif line == "":
                        if data and data.get("event") == "message" and str(data.get("data", "")).startswith("from-server-"):
                            seen.append((ident, data["client"]))
                        ident, data = None, None
            reader = asyncio.create_task(asyncio.to_thread(read_stream))
            await asyncio.sleep(0.5)
            for k in others:
                await sockets[next(iter(log.live[k]))].send(f"from-server-{k}")
            await reader
            stream.close()
            ids = [i if i is not None else -1 for i, _ in seen]
            checks.check("1 steady: events of clients on other nodes on node 0's event stream",
                         sorted(c for _, c in seen) == sorted(others) and ids == sorted(ids) and len(set(ids)) == len(ids),
                         f"{len(seen)} of {len(others)}, ids {'increasing' if ids == sorted(ids) else 'out of order'}", "all, in log order")
            # One node delivers the webhook: each event once.
            await wait_for(lambda: sum(1 for _, d in hooked if str(d).startswith("from-server-")) >= len(others), 5)
            mine = [seq for seq, d in hooked if str(d).startswith("from-server-")]
            checks.check("1 steady: webhook deliveries of those events (one node delivers)",
                         len(mine) == len(others) and len(set(mine)) == len(mine),
                         f"{len(mine)} deliveries of {len(others)} events", "each once")
            # An operator's connect on a node that does not own the client
            # is refused, naming the owner: no second connection.
            k = others[0]
            try:
                cl.api(0, "POST", f"/api/clients/{k}/connect")
                status = 202
            except urllib.error.HTTPError as e:
                status = e.code
            await asyncio.sleep(1)
            checks.check("1 steady: connect on a node that does not own the client", status == 409 and len(log.live[k]) == 1,
                         f"{status}, {len(log.live[k])} connection(s)", "409, still 1")
            # The internal route wants the cluster secret.
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{cl.ports[1]}/internal/clients/{theirs[0]}/send?epoch=1",
                                             method="POST", data=b'{"text":"forged"}', headers={"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=5)
                status = 200
            except urllib.error.HTTPError as e:
                status = e.code
            checks.check("1 steady: a forwarded send without the cluster secret", status == 403, str(status), "403")

        if 2 in only:
            print("2 kill -9 of one node", flush=True)
            times = []
            lost = 0
            for r in range(reps):
                await settled()
                victim = 1 + r % (args.nodes - 1)
                mine = [k for k, n in cl.owners(0).items() if n == victim]
                log.reset_max()
                t0 = time.monotonic()
                cl.signal(victim, signal.SIGKILL)
                cl.procs[victim].wait()
                await wait_for(lambda: all(any(e[1] == k and e[3] == "open" for e in log.since(t0)) for k in mine), 15)
                opens = {}
                for e in log.since(t0, "open"):
                    opens.setdefault(e[1], e[0] - t0)
                lost += sum(1 for k in mine if k not in opens)
                times += [opens[k] for k in mine if k in opens]
                two = [k for k in keys if log.max_live.get(k, 0) > 1]
                checks.check(f"2 kill -9 run {r + 1}: never two live connections", not two, f"{len(two)} keys with two", "0")
                cl.start(victim)
            checks.check("2 kill -9: reconnect p50", pct(times, 0.5) <= 6, f"{pct(times, 0.5):.2f} s", "<= 6 s")
            checks.check("2 kill -9: reconnect max", max(times, default=99) <= 8 and lost == 0,
                         f"{max(times, default=float('nan')):.2f} s, {lost} never reconnected", "<= 8 s, none lost")

        if 3 in only:
            print("3 SIGSTOP for 2 s", flush=True)
            for r in range(reps):
                await settled()
                t0 = time.monotonic()
                cl.signal(1, signal.SIGSTOP)
                await asyncio.sleep(2)
                cl.signal(1, signal.SIGCONT)
                await asyncio.sleep(3)
                churn = log.since(t0, "open") + log.since(t0, "close")
                checks.check(f"3 SIGSTOP 2 s run {r + 1}: reconnects", not churn, f"{len(churn)} opens/closes", "0")

        if 4 in only:
            print("4 SIGSTOP for 15 s", flush=True)
            for r in range(reps):
                await settled()
                victim = 1 + r % (args.nodes - 1)
                mine = [k for k, n in cl.owners(0).items() if n == victim]
                stale = {next(iter(log.live[k])) for k in mine}
                t0 = time.monotonic()
                cl.signal(victim, signal.SIGSTOP)
                took = await wait_for(lambda: all(any(e[1] == k and e[3] == "open" for e in log.since(t0)) for k in mine), 10)
                opens = {}
                for e in log.since(t0, "open"):
                    opens.setdefault(e[1], e[0] - t0)
                worst = max((opens.get(k, 99) for k in mine), default=0)
                checks.check(f"4 SIGSTOP 15 s run {r + 1}: taken over", took and worst <= 8, f"max {worst:.2f} s", "<= 8 s")
                await asyncio.sleep(max(0, 15 - (time.monotonic() - t0)))
                t1 = time.monotonic()
                cl.signal(victim, signal.SIGCONT)
                closed = await wait_for(lambda: all(c not in log.live.get(log.conn_key[c], set()) for c in stale), 3)
                await asyncio.sleep(1)
                sent = [e for e in log.since(t1, "msg") if e[2] in stale]
                closes = [e[0] - t1 for e in log.since(t1, "close") if e[2] in stale]
                checks.check(f"4 SIGSTOP 15 s run {r + 1}: stale node's messages after SIGCONT", not sent, f"{len(sent)}", "0")
                checks.check(f"4 SIGSTOP 15 s run {r + 1}: stale sockets closed", closed and max(closes, default=0) <= 1,
                             f"{len(closes)} of {len(stale)}, last after {max(closes, default=float('nan')):.2f} s", "all within 1 s")

        if (5 in only or 6 in only) and not args.pg_ctl:
            print("5, 6 skipped: --pg-ctl not given", flush=True)
        if 5 in only and args.pg_ctl:
            print("5 PostgreSQL restart", flush=True)
            for r in range(reps):
                await settled()
                t0 = time.monotonic()
                pg_ctl(args.pg_ctl, "restart")
                await asyncio.sleep(6)
                churn = log.since(t0, "open") + log.since(t0, "close")
                checks.check(f"5 PostgreSQL restart run {r + 1}: reconnects", not churn, f"{len(churn)} opens/closes", "0")

        if 6 in only and args.pg_ctl:
            print("6 PostgreSQL down for 20 s", flush=True)
            for r in range(reps):
                await settled()
                t0 = time.monotonic()
                pg_ctl(args.pg_ctl, "stop")
                stopped = await wait_for(lambda: not log.live_keys(), 6)
                t_stop = time.monotonic() - t0
                checks.check(f"6 PostgreSQL down run {r + 1}: clients stopped", stopped and t_stop <= 5,
                             f"{t_stop:.2f} s, {len(log.live_keys())} still live", "all within 5 s")
                await asyncio.sleep(max(0, 20 - (time.monotonic() - t0)))
                pg_ctl(args.pg_ctl, "start")
                t1 = time.monotonic()
                back = await wait_for(lambda: log.live_keys() == everyone, 12)
                checks.check(f"6 PostgreSQL down run {r + 1}: all back", back and time.monotonic() - t1 <= 10,
                             f"{time.monotonic() - t1:.2f} s, {len(log.live_keys())} of {len(keys)}", "within 10 s")

        if 7 in only:
            print("7 rolling SIGTERM", flush=True)
            gaps = []
            twos = 0
            codes = []
            converged = []
            for r in range(reps):
                for n in range(args.nodes):
                    t_settle = time.monotonic()
                    converged.append((await settled(), time.monotonic() - t_settle))
                    mine = [k for k, m in cl.owners((n + 1) % args.nodes).items() if m == n]
                    log.reset_max()
                    t0 = time.monotonic()
                    cl.signal(n, signal.SIGTERM)
                    await wait_for(lambda: all(any(e[1] == k and e[3] == "open" for e in log.since(t0)) for k in mine), 10)
                    for k in mine:
                        close = next((e[0] for e in log.since(t0, "close") if e[1] == k), None)
                        opened = next((e[0] for e in log.since(t0, "open") if e[1] == k), None)
                        if close is not None and opened is not None:
                            gaps.append(max(0.0, opened - close))
                        else:
                            gaps.append(99.0)
                    twos += sum(1 for k in keys if log.max_live.get(k, 0) > 1)
                    codes.append(cl.procs[n].wait(timeout=15))
                    cl.start(n)
            checks.check("7 rolling SIGTERM: handover p99", pct(gaps, 0.99) <= 1.5,
                         f"p50 {pct(gaps, 0.5):.2f} s, p99 {pct(gaps, 0.99):.2f} s over {len(gaps)} handovers", "p99 <= 1.5 s")
            checks.check("7 rolling SIGTERM: duplicates", twos == 0, f"{twos} keys with two live connections", "0")
            checks.check("7 rolling SIGTERM: rebalanced after each restart", all(ok for ok, _ in converged),
                         f"{sum(ok for ok, _ in converged)} of {len(converged)}, slowest {max(t for _, t in converged):.1f} s", "all within 60 s")
            checks.check("7 rolling SIGTERM: nodes exit cleanly", all(c == 0 for c in codes), f"exit codes {sorted(set(codes))}", "all 0")

        if 8 in only:
            print("8 durable sends through node A to keys owned by node B during its failover", flush=True)
            for r in range(reps):
                await settled()
                victim = 1 + r % (args.nodes - 1)
                mine = [k for k, n in cl.owners(0).items() if n == victim][:20]
                per_key = 50
                t0 = time.monotonic()

                def send_all():
                    for i in range(per_key):
                        for k in mine:
                            cl.api(0, "POST", f"/api/clients/{k}/send", {"text": f"m{r}-{i}", "durable": True})
                        if i == per_key // 2:
                            cl.signal(victim, signal.SIGKILL)
                await asyncio.to_thread(send_all)

                def delivered():
                    got = {k: [e[4] for e in log.since(t0, "msg") if e[1] == k and e[4] != "tick"] for k in mine}
                    return all(len(set(v)) == per_key for v in got.values()), got
                await wait_for(lambda: delivered()[0], 20, 0.25)
                ok, got = delivered()
                missing = sum(per_key - len(set(v)) for v in got.values())
                # In order: the first time each message is seen follows the send order.
                unordered = 0
                for v in got.values():
                    first = list(dict.fromkeys(v))
                    if first != [f"m{r}-{i}" for i in range(per_key)][:len(first)]:
                        unordered += 1
                checks.check(f"8 durable via A during B's failover run {r + 1}", ok and unordered == 0,
                             f"{len(mine) * per_key - missing} of {len(mine) * per_key} delivered, {unordered} keys out of order", "all, in order")
                cl.procs[victim].wait()
                cl.start(victim)
    finally:
        cl.stop_all()
        server.close()
        hook_server.shutdown()
    print()
    print("| fault | measured | target | result |")
    print("|---|---|---|---|")
    for name, measured, target, result in checks.rows:
        print(f"| {name} | {measured} | {target} | {result} |")
    if checks.failed:
        print(f"\n{checks.failed} check(s) failed; node logs in {cl.dir}")
        sys.exit(1)
    shutil.rmtree(cl.dir, ignore_errors=True)


def pg_ctl(script, action):
    """scripts/postgres.sh start|stop|restart: the same options every time."""
    subprocess.run([script, action], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    asyncio.run(main())
