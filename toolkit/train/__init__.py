"""Training: a split file in, a finished run folder out (the float model, its decision rule and reference).

:mod:`.config` holds every option with its default and check, :mod:`.fit` one phase of Keras's ``fit``,
:mod:`.trainer` the two phases and the run folder, :mod:`.decision` the decision rule fitted on val,
:mod:`.runs` how later stages read (and ``pack`` commits) a finished run, and :mod:`.evaluate` scores runs.
Nothing is imported here, so reading a config does not load Keras.
"""
