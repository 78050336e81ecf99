"""Test support shared by the tests, the demo and the benchmark.

- `records`: contract events, their Avro and wire encodings, and the row the Post API must receive for one.
- `kafka`: producing, reading a topic to its end offsets, and the committed-offsets probe.
- `bridge_child`: the bridge as a child process (`run`) or a command (`check-config`, `sandbox`, ...).
- `waiting`: polling a condition with a deadline, reading a metric out of the exposition text.
- `secured`: the session's SASL_SSL / mutual-TLS broker and its ACLs.
- `helm_render`: `helm template` of the chart, parsed.
- `processes`: the bridge's transform workers as psutil sees them.
- `side_by_side`: several end-to-end cases of one test at once, each with a sandbox of its own.
"""
