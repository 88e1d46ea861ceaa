"""Export a training run as a Flutter-ready TFLite bundle: convert, attach metadata, check, write.

Steps, each its own module: :mod:`.calibration` picks the int8 calibration images,
:mod:`.convert` produces the .tflite bytes (:mod:`.litert` for the litert-quantizer back end,
:mod:`.selective` for int8 with some layers left in float), :mod:`.metadata` embeds and re-reads
the metadata, :mod:`.writer` assembles the bundle folder and :mod:`.stage` runs these steps for
one attempt. :mod:`.bundle` reads a bundle as an app does. The drift gate that decides whether a
staged bundle is published sits one layer up, in :mod:`toolkit.drift.gated`.
"""
