"""One module per command: each takes parsed settings and returns a result value.

cli.py parses the arguments (arguments.py), reads the environment (handed in as an ``Env``), calls a
command, renders its result (render.py) and maps it to an exit code. Commands log progress
through the ``Log`` they are given, never read ``os.environ`` and never exit.
"""
