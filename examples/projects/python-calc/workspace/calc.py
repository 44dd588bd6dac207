"""A tiny calculator: `python3 -m calc 2 + 3` prints 5."""

import operator
import sys

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def calc(a: str, op: str, b: str) -> float | int:
    if op not in OPS:
        raise ValueError(f"unknown operator {op!r}")
    x, y = float(a), float(b)
    result = OPS[op](x, y)
    return int(result) if result == int(result) else result


if __name__ == "__main__":
    print(calc(*sys.argv[1:4]))
