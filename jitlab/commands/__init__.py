"""Every `jitlab` verb, one module each with ``main(argv) -> exit code``: parse -> one library call -> print.

No verb is a library for another file; ``jitlab.commands.cli`` dispatches ``jitlab VERB ...`` to them.
"""
