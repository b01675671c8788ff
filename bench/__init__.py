"""`python -m bench` (`make bench`): inbound throughput beside a bare endpoint, and end-to-end
latency from a platform webhook to the agent and to the dashboard WebSocket.

Servers run as subprocesses pinned to CPU 0 (when `taskset` and a second CPU exist); the load
generator, the stub agent and the WebSocket client run in this process on CPU 1. Results and how
to read them: docs/benchmarks.md.
"""
