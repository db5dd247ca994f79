"""One call: its session and the parts it is made of (turns, reply, answer, actions, line, events)."""
