"""Every `jitlab` verb, one module each: a thin layer over the libraries (parse -> one library call -> print).

The layer rule: base (errors, atomic) -> core (flow, sampling, models, data) -> training (module, ema,
callbacks, checkpoint, resume) -> scoring library (metrics, generation, evaluation, the fit configuration)
-> experiments (grid, report, toy, bench) -> commands. Each layer imports only the layers before it
(``tests/test_layers.py`` checks it), so no library imports a verb and no verb is a library for another file.
``jitlab.commands.cli`` dispatches ``jitlab VERB ...`` to ``jitlab.commands.VERB.main``.
"""
