"""The voice call, from answer to hang-up: the inbound call and its flow session (inbound.py, voice.py),
waiting in a queue, ringing and bridging the agent's leg (agent_leg.py), callbacks, transfers, supervision
and the calls live on this node. The flow language itself is `flows/`; speech is `speech/`."""
