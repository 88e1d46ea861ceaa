"""The model: :mod:`.backbones` registers the backbones (no Keras import), :mod:`.classifier` builds the
classifier around one, with the BatchNorm fix, and runs it."""
