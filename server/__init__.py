"""The composition root, the top layer: `init_app` opens every resource and wires the features together
(app.py), the `hilo` command (cli.py), health and metrics, the demo seed and the simulated caller. Nothing
imports it but tests and benchmarks."""
