"""Start-up (to the first accepted connection) and stop times: MailServer against aiosmtpd.

Run: ``.venv/bin/python bench/fixture.py [RUNS]`` (aiosmtpd comes with the ``bench`` extra).
Prints the medians over RUNS (default 20) of each, and mailgw's ratio to aiosmtpd's Controller.
MailServer starts all seven listeners (aiosmtpd: one SMTP listener); the first MailServer run also
starts the reactor thread and is left out, as a test session pays it once.
"""

from __future__ import annotations

import smtplib
import socket
import statistics
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from mailgw.testing import MailServer


def _first_connection(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.noop()


def measure_mailgw() -> tuple[float, float]:
    """(start to first SMTP conversation, stop) in seconds, for one MailServer."""
    started = time.perf_counter()
    server = MailServer().start()
    _first_connection(server.smtp_port)
    up = time.perf_counter() - started
    started = time.perf_counter()
    server.stop()
    return up, time.perf_counter() - started


def measure_aiosmtpd() -> tuple[float, float]:
    """The same for aiosmtpd's Controller with a Sink handler."""
    with socket.socket() as probe:  # the Controller needs a known port (it connects to it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    _first_connection(port)
    up = time.perf_counter() - started
    started = time.perf_counter()
    controller.stop()
    return up, time.perf_counter() - started


def main(runs: int = 20) -> None:
    """Measure both, print medians and ratios."""
    measure_mailgw()  # starts the reactor thread, once per process
    results = {}
    for name, measure in (("mailgw", measure_mailgw), ("aiosmtpd", measure_aiosmtpd)):
        samples = [measure() for _ in range(runs)]
        results[name] = (
            statistics.median(s[0] for s in samples),
            statistics.median(s[1] for s in samples),
        )
    print(f"medians over {runs} runs     start (s)   stop (s)")
    for name, (up, down) in results.items():
        print(f"{name:24} {up:10.4f} {down:10.4f}")
    (mu, md), (au, ad) = results["mailgw"], results["aiosmtpd"]
    print(f"{'ratio mailgw/aiosmtpd':24} {mu / au:10.2f} {md / ad:10.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
