# Raises at run time (the `runtime_error` scenario): exit status 1 and a traceback on stderr.
from calc import calc

print("about to divide")
print(calc("1", "/", "0"))
