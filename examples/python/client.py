#!/usr/bin/env python3
"""agentvisor from Python with pyzmq (pip install pyzmq).

    python3 client.py req utils.echo "hello"            # one task, REQ socket
    python3 client.py dealer utils.uuid "" --count 10   # many in flight, DEALER socket
    python3 client.py stream utils.echo "a b c"         # streamed chunks, DEALER socket
    python3 client.py events agent.                      # print events whose topic starts with agent.

Endpoints default to agentvisor's: tasks tcp://127.0.0.1:7201 (ROUTER), events
tcp://127.0.0.1:7290 (PUB); override with --tasks / --events. Once the daemon
has API tokens, every task carries one: --token, or AGENTVISOR_TOKEN (the PUB
socket takes none: it stays on the daemon's host).

Task envelope (JSON, one per message): {"id", "type", "input", "agent",
"priority" 0-9, "deadline_ms", "stream", "session", "token"}. Reply: {"id", "status":
"ok"|"error", "agent", "output", "timings_ms", "error": {"code", "message"}}.
"""
import argparse
import json
import os
import sys
import uuid

import zmq


def parse_input(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def envelope(task_id, task_type, text, stream=False, deadline_ms=None, token=None):
    """The task envelope; `deadline_ms` (default: the daemon's 30 s) bounds queue and run;
    `token` (default: AGENTVISOR_TOKEN) is the API token, when the daemon asks for one."""
    env = {"id": task_id, "type": task_type, "input": parse_input(text), "stream": stream}
    if deadline_ms is not None:
        env["deadline_ms"] = deadline_ms
    token = token or os.environ.get("AGENTVISOR_TOKEN")
    if token:
        env["token"] = token
    return env


def req(ctx, endpoint, task_type, text, timeout_ms=30000, deadline_ms=None, token=None):
    """One task at a time: REQ adds the empty delimiter frame for us."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.connect(endpoint)
    sock.send_json(envelope(str(uuid.uuid4()), task_type, text, deadline_ms=deadline_ms, token=token))
    reply = sock.recv_json()
    sock.close()
    return reply


def dealer(ctx, endpoint, task_type, text, count=1, stream=False, timeout_ms=30000, on_chunk=None,
           deadline_ms=None, token=None):
    """Many tasks in flight on one DEALER; replies come back in any order, matched by id."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.connect(endpoint)
    ids = [f"py-{uuid.uuid4()}" for _ in range(count)]
    for i in ids:
        sock.send_json(envelope(i, task_type, text, stream=stream, deadline_ms=deadline_ms, token=token))
    replies = {}
    while len(replies) < count:
        msg = json.loads(sock.recv_multipart()[-1])
        if msg.get("event") == "chunk":
            if on_chunk:
                on_chunk(msg)
            continue
        replies[msg["id"]] = msg
    sock.close()
    return [replies[i] for i in ids]


def events(ctx, endpoint, prefix="", count=None):
    """Subscribe to events: two frames, [topic][json]; seq increases by 1 per event."""
    sock = ctx.socket(zmq.SUB)
    sock.connect(endpoint)
    sock.setsockopt_string(zmq.SUBSCRIBE, prefix)
    n = 0
    while count is None or n < count:
        topic, body = sock.recv_multipart()
        yield topic.decode(), json.loads(body)
        n += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["req", "dealer", "stream", "events"])
    ap.add_argument("type_or_topic", nargs="?", default="")
    ap.add_argument("input", nargs="?", default="")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--tasks", default="tcp://127.0.0.1:7201")
    ap.add_argument("--events", default="tcp://127.0.0.1:7290")
    ap.add_argument("--token", default=None, help="API token (default: AGENTVISOR_TOKEN)")
    args = ap.parse_args()
    ctx = zmq.Context.instance()
    if args.mode == "req":
        print(json.dumps(req(ctx, args.tasks, args.type_or_topic, args.input, token=args.token)))
    elif args.mode == "dealer":
        for r in dealer(ctx, args.tasks, args.type_or_topic, args.input, count=args.count, token=args.token):
            print(json.dumps(r))
    elif args.mode == "stream":
        final = dealer(ctx, args.tasks, args.type_or_topic, args.input, stream=True, token=args.token,
                       on_chunk=lambda c: print(c["delta"], end="", flush=True))
        print()
        print(json.dumps(final[0]))
    else:
        for topic, event in events(ctx, args.events, args.type_or_topic, None if args.count == 1 else args.count):
            print(topic, json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
