"""The data stage: :mod:`.layouts` (what can be read, and the split's defaults), :mod:`.readers`, :mod:`.images`
(decode, resize, cache), :mod:`.split` (lesion split, audit, split file), :mod:`.augment` and :mod:`.balance`
(training's augmentation and class weights), :mod:`.pipeline` (batches for Keras) and :mod:`.demo`.

Submodules are imported directly, so that reading and splitting data does not import Keras.
"""
