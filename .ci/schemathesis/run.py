#!/usr/bin/env python3
"""Schemathesis against a started release binary (issue 13, item 8).

Starts `target/release/flotilla serve` on a free loopback port in a temporary data directory,
creates a tenant, and runs schemathesis with every check on: once with the tenant's token over
every tenant operation, once with the operator's token over the operator's. Fails on any
finding, and unless the service answered at least MIN_REQUESTS requests (counted by its own
`/metrics`). Schemathesis comes from PyPI, into a virtual environment under `target/`.

Usage: .ci/schemathesis/run.py  (from anywhere; builds nothing: run `cargo build --release` first)
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(ROOT, "target", "schemathesis-venv")
SCHEMATHESIS = "schemathesis==4.32.5"
MIN_REQUESTS = 2000
OPERATOR_PATHS = "^/v1/(tenants|journal)"
# Fixed, so that a red run can be repeated; change it to explore.
SEED = "20261129"


def venv():
    binary = os.path.join(VENV, "bin", "schemathesis")
    if not os.path.exists(binary):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        pip = os.path.join(VENV, "bin", "pip")
        subprocess.run([pip, "install", "--quiet", SCHEMATHESIS], check=True)
    return binary


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def requests_answered(base):
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("flotilla_http_requests_total{")
    )


def wait_ready(base, service):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            sys.exit("flotilla exited before it was ready")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)  # a real process starting; nothing to tick
    sys.exit("flotilla was not ready within 60 s")


def main():
    schemathesis = venv()
    binary = os.path.join(ROOT, "target", "release", "flotilla")
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(os.path.join(scratch, "serve.log"), "w")
        service = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{port}",
             "--data-dir", os.path.join(scratch, "data")],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(base, service)
            with open(os.path.join(scratch, "data", "operator.token")) as f:
                operator = f.read().strip()
            tenant = call(base, "POST", "/v1/tenants", operator, {"name": "schemathesis"})["token"]
            before = requests_answered(base)
            config = os.path.join(HERE, "schemathesis.toml")
            common = [schemathesis, "--config-file", config, "run", base + "/openapi.json", "--checks", "all",
                      "--seed", SEED, "--max-examples", "60", "--no-color",
                      "--suppress-health-check", "all"]
            runs = [
                common + ["-H", f"Authorization: Bearer {tenant}",
                          "--exclude-path-regex", OPERATOR_PATHS],
                common + ["-H", f"Authorization: Bearer {operator}",
                          "--include-path-regex", OPERATOR_PATHS],
            ]
            # The rules no JSON Schema can state (see the module).
            env = dict(os.environ, SCHEMATHESIS_HOOKS="flotilla_rules", PYTHONPATH=HERE)
            failed = False
            for run in runs:
                failed |= subprocess.run(run, cwd=scratch, env=env).returncode != 0
            answered = requests_answered(base) - before
            print(f"flotilla answered {answered:.0f} requests from schemathesis")
            if service.poll() is not None:
                failed = True
                print("flotilla exited during the run")
            if answered < MIN_REQUESTS:
                failed = True
                print(f"fewer than {MIN_REQUESTS} requests")
        finally:
            service.terminate()
            service.wait(timeout=30)
            log.close()
        if failed:
            with open(os.path.join(scratch, "serve.log")) as f:
                print("--- the service's log, last 40 lines ---")
                print("".join(f.readlines()[-40:]))
            sys.exit(1)


if __name__ == "__main__":
    main()
