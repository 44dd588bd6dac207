# Raises at run time (the `runtime_error` scenario): exit status 1 and a traceback on stderr.
import sys

sys.path.insert(0, ".")
from calc import calc  # noqa: E402

print("about to divide", flush=True)
print(calc("1", "/", "0"))
