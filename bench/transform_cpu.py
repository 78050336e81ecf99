"""CPU one transform costs per event, over chunks of valid contract events of the benchmark's shapes.

    .venv/bin/python -m bench.transform_cpu [--events N] [--chunk 1000] [--repeat R]

Decodes, makes rows and encodes CSV (`bridge.transform.transform`) in this process, as a transform worker does,
and prints the best of R rounds as CPU seconds per 100,000 events (process time, so other load on the machine
counts less than wall time would). It reports, it never judges.
"""

from __future__ import annotations

import argparse
import json
import time

from bridge.avro import WriterSchemas, contract_schema
from bridge.transform import Rules, collect_rarely, transform
from tests.harness import event, wire

SCHEMA_ID = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    collect_rarely()
    now = time.time()
    values = [wire(SCHEMA_ID, event(seq, int(now * 1000))) for seq in range(args.events)]
    chunks = [values[start : start + args.chunk] for start in range(0, len(values), args.chunk)]
    schemas = WriterSchemas(by_id={SCHEMA_ID: json.dumps(contract_schema())})
    rules = Rules(default_application=1111, keyed=None, max_future_s=3600)
    transform(chunks[0], now, rules, schemas, "events")  # parses the schema once, as a worker does on its first chunk
    rounds = []
    for _ in range(args.repeat):
        started = time.process_time()
        for chunk in chunks:
            transform(chunk, now, rules, schemas, "events")
        rounds.append(time.process_time() - started)
    per_100k = min(rounds) / args.events * 100_000
    print(f"transform: {per_100k:.3f} CPU s per 100,000 events (best of {args.repeat}, chunks of {args.chunk})")
    print(f"           {per_100k * 10:.2f} µs per event; rounds {', '.join(f'{r:.3f}' for r in rounds)} s")


if __name__ == "__main__":
    main()
