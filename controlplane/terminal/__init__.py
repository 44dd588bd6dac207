"""The workspace terminal: one process (`openhosting-admin terminal-service`) holds every workspace's
terminal port (`hub.PtyHub`), serves the SSH gateway (`sshgate`) and the console proxy's terminal
pages over a local Unix socket (`service`, protocol in `wire`)."""
