#!/usr/bin/env python3
"""Sets up a running flotilla for the wrk webhook load, and writes pre-signed requests.

    setup.py <base url> <operator token file> <groups> <requests> <out dir>

Creates a tenant and <groups> groups (max_size 1, cooldown 0), each with a policy and a webhook,
the first time (their ids and secrets are kept in <out dir>/hooks.json); then writes <requests>
calls signed now, with distinct nonces, round-robin over the webhooks, to <out dir>/requests.tsv
(path, nonce, timestamp, signature). Standard library only.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.request

base, token_file, groups, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
operator = open(token_file).read().strip()


def call(method, path, token, body):
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method=method,
        headers={"authorization": "Bearer " + token, "content-type": "application/json"})
    return json.load(urllib.request.urlopen(request))


kept = os.path.join(out, "hooks.json")
if os.path.exists(kept):
    hooks = [(hook, base64.b64decode(key)) for hook, key in json.load(open(kept))]
else:
    tenant = call("POST", "/v1/tenants", operator, {"name": "wrk"})["token"]
    hooks = []
    for _ in range(groups):
        group = call("POST", "/v1/groups", tenant, {"name": "g", "min_size": 0, "max_size": 1,
                     "cooldown_seconds": 0, "launch": {"provider": "simulated"}})
        policy = call("POST", f"/v1/groups/{group['id']}/policies", tenant,
                      {"name": "up", "adjustment_type": "change", "adjustment": 1})
        hook = call("POST", f"/v1/groups/{group['id']}/policies/{policy['id']}/webhooks", tenant,
                    {"name": "h"})
        hooks.append((hook["id"], base64.b64decode(hook["secret"][len("whsec_"):])))
    json.dump([(hook, base64.b64encode(key).decode()) for hook, key in hooks], open(kept, "w"))

body = b'{"alarm":"cpu-high","value":0.93}'
now = int(time.time())
with open(os.path.join(out, "requests.tsv"), "w") as requests:
    for i in range(count):
        hook, key = hooks[i % len(hooks)]
        nonce = f"msg_{now}_{i}"
        mac = hmac.new(key, f"{nonce}.{now}.".encode() + body, hashlib.sha256).digest()
        requests.write(f"/v1/hooks/{hook}\t{nonce}\t{now}\tv1,{base64.b64encode(mac).decode()}\n")
