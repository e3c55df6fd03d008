"""The agent's and supervisor's faces: the agent console (sign-in, screen-pop over WebSocket, state, wrap-up,
chat pane), the wallboard and reports pages, the agents and call-control API (hold, transfers, listen /
whisper / barge, moves) and the audit of actions on live work."""
