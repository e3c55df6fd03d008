"""What telecom admins edit, and its schemas: numbers and their flows, hours, queues and agents, phones, KPIs,
messaging channels, console settings and the demo customers (YAML files in this folder, validated with
file, line and field). Not Asterisk's own dialplan, which asterisk/ writes."""
