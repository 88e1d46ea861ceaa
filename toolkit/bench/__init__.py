"""Latency, memory and size of bundles, measured the way on-device benchmarks measure them.

Locally: each bundle's model in ``ai_edge_litert`` (XNNPACK on unless asked otherwise), init and first
inference timed apart, a warm-up, then timed ``invoke()`` calls interleaved across bundles and thread
counts (A B A B ...), so a noisy machine slows all of them alike and their ratios hold. On a phone:
TensorFlow Lite's ``benchmark_model`` over ``adb``, its output parsed into the same report; or the
timings a Flutter app wrote, imported.

:mod:`.local` measures here, :mod:`.android` on a phone, :mod:`.environment` records the machine, and
:mod:`.options` holds the defaults the CLI offers.
"""
