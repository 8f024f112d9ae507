"""Host <-> board over a serial line: framing (frames.py), the request/response session
(session.py) and the whole run on a board with its profile (run.py)."""
