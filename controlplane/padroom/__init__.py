"""The pad page's process: the live collaborative editor, its rooms (pycrdt), playback and history."""
