"""`python -m controlplane.padroom --bind 127.0.0.1:8081`: the pad page process under uvicorn (one
process: rooms live in memory, so one pad's people must reach the same process)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="padroom")
    parser.add_argument("--bind", default="127.0.0.1:8081")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls for others' updates")
    args = parser.parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    from .app import build

    uvicorn.run(build(poll=args.poll), host=host or "127.0.0.1", port=int(port), log_level="warning",
                ws="websockets-sansio", lifespan="on", ws_max_size=4 * 1024 * 1024)


if __name__ == "__main__":
    main()
