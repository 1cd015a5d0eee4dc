"""HTTP server bake-off for the KVStore++ node, measured on this machine.

What it measures
----------------
``http``
    Each candidate server runs the SAME tiny in-memory key-value app
    (:mod:`bench.bakeoff.apps`) in a subprocess on 127.0.0.1 and a
    free port. The script waits for it, checks the app answers correctly
    (PUT 200 + ``{"ok":true}``, GET returns the value, unknown key 404), then
    runs ``wrk -t1 -cN --latency`` against it for two scenarios:

    * ``GET``: ``GET /kv/bench-key`` of a stored 100-byte value;
    * ``PUT``: ``PUT /kv/k<n % 10000>`` with a 100-byte body (a wrk Lua script).

    Each scenario gets a short warm-up run, then is measured ``--repeats``
    times, each run after waiting (up to ``--quiet-wait`` s) for other work on
    the machine to go quiet; the run with the most requests/s is reported (the
    machine has 2 cores, shared by wrk, the server and whatever else is
    running). Reported: requests/s, latency p50/p99, wrk errors, the CPU other
    work used during each run (from /proc/stat minus our own processes), and
    the server's process count, thread count and RSS after the load. The
    server is always stopped (SIGTERM to its process group, SIGKILL after a
    grace period).

``micro``
    ``timeit`` (best of 5 repeats, auto-ranged loop counts) of: PyJWT HS256
    decode of a small token, ``msgpack.packb`` of a small WAL-like record,
    ``google_crc32c.value`` of it (and both together), ``json.dumps`` vs
    ``orjson.dumps`` of a small dict.

``streaming``
    For granian's embedded server (RSGI) and uvicorn (raw ASGI), run in this
    process: a handler streams a chunk every 50 ms; a raw-socket client reads
    a few chunks and closes the connection. Mode ``send`` only keeps sending
    and records whether/when sending fails; mode ``watch`` also waits for the
    disconnect signal (RSGI ``await proto.client_disconnect()``, ASGI
    ``receive()`` -> ``http.disconnect``). It also checks two lifecycle facts of
    the embedded server: whether ``Server.stop()`` returns while a stream is
    still open, and whether a second server can bind the same port.

Usage
-----
``python -m bench.bakeoff [--duration S] [--connections N]`` (from the repository's root)
runs all three sections and writes ``bench/results/RESULTS-bakeoff.md``;
``--check-streaming`` runs only the streaming check; ``--json`` prints the
results as JSON on stdout (human-readable output then goes to stderr).
Modules
-------
``apps`` the app under test, ``candidates`` the servers and how each is started, ``http_load``
the wrk runs, ``procfs`` process and CPU accounting from /proc, ``micro`` and ``streaming``
the other two sections, ``report`` the markdown and JSON, ``runner`` the command line.
"""
