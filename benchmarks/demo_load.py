"""Demo under load: the real `crossmodal demo` on loopback, driven by concurrent API clients.

Indexes the sample folder with the shipped model, starts the demo, then prints for each level of
concurrency the completed searches, errors, p50/p95 latency and throughput; a burst (does
overload get a quick answer?); and the server's memory after many sessions (is it bounded?).

    python benchmarks/demo_load.py                     # 1, 8, 32 clients; a burst of 200
    python benchmarks/demo_load.py --sessions 3000     # memory after 3,000 sessions

Requests go through Gradio's HTTP API (`/gradio_api/call/search_text`), each in a new session,
as separate visitors are; results are not downloaded, so the figures are the server's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

SEARCH_ARGS = ["a red circle", "", 0.5, "", -0.5, "", 0.0, 24, 0, "", "", "", 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_demo(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    python = [sys.executable, "-m", "crossmodal"]
    sample, db = workdir / "sample", workdir / "db"
    subprocess.run([*python, "sample", str(sample)], check=True, capture_output=True)
    subprocess.run(
        [*python, "index", str(sample), "--db", str(db), "--model", "shapes-tiny"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [*python, "demo", "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            with urllib.request.urlopen(url, timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the demo did not start")


def search_once(url: str) -> None:
    """One text search through Gradio's HTTP API (POST, then read the event stream), the way
    any API client calls it; a new session each time. Raises on an error event."""
    body = json.dumps({"data": SEARCH_ARGS}).encode()
    start = urllib.request.Request(
        f"{url}/gradio_api/call/search_text", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(start, timeout=120) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(
        f"{url}/gradio_api/call/search_text/{event_id}", timeout=120
    ) as stream:
        text = stream.read().decode()
    if "event: error" in text:
        raise RuntimeError(text.split("data:", 1)[-1].strip()[:80] or "error event")


def run_clients(url: str, clients: int, per_client: int) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)  # all start together: a real burst

    def work() -> None:
        barrier.wait()
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                search_once(url)
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as exc:  # counted and shown, not fatal: this measures failures
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:80]}")

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def describe(name: str, latencies: list[float], errors: list[str], seconds: float) -> str:
    if latencies:
        ordered = sorted(latencies)
        p50 = statistics.median(ordered) * 1000
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000
        timing = f"p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  max {ordered[-1] * 1000:6.0f} ms"
    else:
        timing = "no request completed"
    rate = len(latencies) / seconds if seconds else 0.0
    line = f"{name:<14} completed {len(latencies):4d}  errors {len(errors):4d}  {timing}  {rate:5.1f}/s"
    if errors:
        kinds = sorted(set(errors))
        line += "\n" + "\n".join(f"    {kind}  x{errors.count(kind)}" for kind in kinds[:3])
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=96, help="per level, spread over clients")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crossmodal-load-") as tmp:
        server, url = start_demo(Path(tmp))
        try:
            print(
                f"demo {url}, pid {server.pid}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
            )
            print(f"memory at start: {rss_mb(server.pid):.0f} MB")
            run_clients(url, 1, 3)  # warm-up
            for clients in args.levels:
                per_client = max(1, args.requests // clients)
                print(describe(f"{clients} clients", *run_clients(url, clients, per_client)))
            print(describe(f"burst {args.burst}", *run_clients(url, args.burst, 1)))
            done = 0
            for step in (args.sessions // 3, 2 * args.sessions // 3, args.sessions):
                latencies, errors, _ = run_clients(url, 8, max(1, (step - done) // 8))
                done = step
                print(
                    f"memory after ~{done} sessions: {rss_mb(server.pid):.0f} MB ({len(errors)} errors)"
                )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
