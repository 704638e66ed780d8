"""The clinic terminal (issue 14, deliverable 1): a small client library
(`client.TerminalClient`) and the `yigongti` command built on it.

- config.py   where the terminal's key, services and queue are
- queue.py    the store-and-forward queue on disk (SQLite): unsigned events
- sender.py   signs a queued event when it sends it (the freshness rule)
- http.py     HTTP calls with the bearer token, and feed reading
- client.py   the library: capture, flush, lookups, feeds
- messages.py every refusal in words a clinic nurse understands
- readback.py the read-back rule of an acknowledgement
- load.py     the load generator: many clinics at a chosen rate (`yigongti load`)
- cli.py      the `yigongti` command (typer, rich)
"""
