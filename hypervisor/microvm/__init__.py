"""Lightweight VMs: the workspace guest program (oh-guest) and its host-side channel."""
