"""Django signal handlers: tell every server process when a session ends."""
