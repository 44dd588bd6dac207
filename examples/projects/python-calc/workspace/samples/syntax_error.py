# Does not compile (the `build_error` scenario's build stage byte-compiles it).
def broken(:
    return 1
