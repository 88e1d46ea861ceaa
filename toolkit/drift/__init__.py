"""Drift: an exported bundle against the run's float reference, with a gate that fails loudly.

Three models answer on the same images: the **reference** (``reference.npz``, the float model on the
machine that trained it, GPU or CPU), the **float model here** (``model.keras`` on this machine) and
the **exported** model (the bundle's .tflite through the bundle's own preprocessing, or predictions a
phone produced). Reference vs float-here is backend/device drift; float-here vs exported is
quantization drift; the gate judges reference vs exported, what an app finally shows.
"""
