"""The base every stage may use: errors, classes, paths, file writing, the TFLite runtime, metrics, plots,
referral operating points and the run-folder layout. Nothing here imports a stage."""
