# Never ends by itself (the `time_limit` scenario's run stage exceeds its 2 s timeout).
print("spinning", flush=True)
while True:
    pass
