"""Running untrusted Python (model-generated code, for code_eval's pass@k) in layers of isolation, and saying
which layers this machine gives (`loralab sandbox`). supervisor.py holds the public API (run_code, require,
probe, isolation, isolation_layers, ExecResult, Isolation, SandboxError, SandboxUnavailable, Level, LEVELS):
import it from loralab.evaluation.sandbox.supervisor, as this file re-exports nothing and stays empty. It
starts and supervises launcher.py, the script that sets the sandbox up inside the namespaces and runs the
program; machine.py words what this machine gives and how to get the namespaces; workdir.py makes and
deletes a run's work directory; cli.py is `loralab sandbox`. launcher.py may import only the standard library
(it runs as `python -I -S launcher.py CONFIG` from wherever Python is installed); supervisor.py, machine.py
and workdir.py only the standard library and this package; cli.py also loralab.errors and, for its opt-in
text, loralab.evaluation.code_eval.
"""
