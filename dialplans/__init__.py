"""What telecom admins edit: the numbers and their IVR, queues and agents (YAML files in this folder)."""
